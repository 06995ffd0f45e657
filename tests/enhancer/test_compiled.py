"""The compile path (``ENHANCER_COMPILE``) on a CPU: its cache key and folder, when it stays off, and that a compiler
that fails in any way leaves the job on the eager network with one log line.

No real compiler runs here (torch.compile of a network takes minutes on two cores): the backends are stand-ins
that return the eager network itself, or break it on purpose; what is tested is our logic around them. The
real compilers, their speed and their accuracy are measured by ``bench/compile.py`` on a GPU.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch

from bus.settings import SettingsError
from enhancer.engines import compiled, tiling
from enhancer.engines._memory import SimulatedOOM
from enhancer.engines.base import EnhanceOptions
from enhancer.engines.realesrgan import RealESRGANEngine
from enhancer.settings import EnhancerSettings

from .photos import psnr, shrink

CPU = torch.device("cpu")
LOGGER = "enhancer.engines.compiled"
#: Engine tests: 32-pixel tiles compiled as 52² inputs (10 pixels of context each side), on a real photo whose
#: four tiles all lie at its edges, where windows are smaller than that and grow to it.
TILE = 32
PHOTO = shrink(skimage.data.astronaut()[40:440, 60:460], 60, 60)
FAST = EnhanceOptions(quality="fast", tile_size=TILE)  # realesr-animevideov3 (real weights) in these tests


def tiny_net() -> torch.nn.Module:
    """A ×2 super-resolution network in miniature (conv + pixel shuffle, output in (0, 1)), for the unit tests."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2), torch.nn.Sigmoid())
    return net.eval().requires_grad_(False)


class Calls:
    """A stand-in compiler: records what it was given and returns ``make(net)`` as the compiled network."""

    def __init__(self, make: Callable[[torch.nn.Module], compiled.Compiled] = lambda net: net) -> None:
        self.make = make
        self.folders: list[Path] = []
        self.runs = 0

    def __call__(self, net: torch.nn.Module, example: torch.Tensor, folder: Path) -> compiled.Compiled:
        self.folders.append(folder)
        fn = self.make(net)

        def run(x: torch.Tensor) -> torch.Tensor:
            self.runs += 1
            return fn(x)

        run(example)  # a backend's first run is part of its build
        return run


class BreaksLater:
    """A stand-in compiled network that works until ``broken`` is set, then raises ``error`` at every run (as a
    card or a compiled kernel may, long after its build)."""

    def __init__(self, error: Exception) -> None:
        self.error, self.broken = error, False

    def __call__(self, inner: torch.nn.Module) -> compiled.Compiled:
        def run(x: torch.Tensor) -> torch.Tensor:
            if self.broken:
                raise self.error
            return inner(x)

        return run


def compile_tiny(net: torch.nn.Module, tmp_path: Path, backend: compiled.Backend, mode: str = "torch",
                 dtype: torch.dtype = torch.float32, edge: int = 24) -> torch.nn.Module:
    return compiled.compile_net(net, name="tiny", mode=mode, edge=edge, device=CPU, dtype=dtype,
                                layout=torch.contiguous_format, cache_root=tmp_path / "compiled", backend=backend)


# --------------------------------------------------------------------------------------------------------
# The cache key and folder
# --------------------------------------------------------------------------------------------------------

KEY = {"model": "RealESRGAN_x4plus", "weights": "ab" * 32, "device": "NVIDIA H200 sm90",
       "versions": "torch 2.14.1 cuda 13.0 cudnn 91900", "compiler": "torch", "shape": (1, 3, 420, 420),
       "dtype": torch.float16}
CHANGED = {"model": "RealESRGAN_x2plus", "weights": "cd" * 32, "device": "NVIDIA H100 80GB HBM3 sm90",
           "versions": "torch 2.15.0 cuda 13.0 cudnn 91900", "compiler": "tensorrt", "shape": (1, 3, 532, 532),
           "dtype": torch.bfloat16}


def test_the_cache_key_is_stable_and_readable() -> None:
    key = compiled.cache_key(**KEY)
    assert key == compiled.cache_key(**dict(KEY))
    assert key.startswith("RealESRGAN_x4plus-torch-float16-420x420-")


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_any_change_of_model_weights_gpu_versions_compiler_shape_or_dtype_changes_the_key(field: str) -> None:
    """A compiled program is only valid for exactly what it was built from: anything else is a new folder."""
    assert compiled.cache_key(**{**KEY, field: CHANGED[field]}) != compiled.cache_key(**KEY)


def test_the_weights_digest_follows_the_weights_not_the_object() -> None:
    a, b = tiny_net(), tiny_net()
    assert compiled.weights_digest(a) == compiled.weights_digest(b)
    with torch.no_grad():
        b[0].bias[0] += 1e-3
    assert compiled.weights_digest(a) != compiled.weights_digest(b)


def test_the_cache_folder_is_made_under_model_dir_and_reused_by_the_next_build(tmp_path: Path) -> None:
    """The second build of the same network (a restart, another slot) gets the first one's folder, with what
    the compiler left there; another dtype gets a folder of its own."""
    net = tiny_net()

    def keep(folder_net: torch.nn.Module) -> compiled.Compiled:
        return folder_net

    first, second, half = Calls(keep), Calls(keep), Calls(keep)
    compile_tiny(net, tmp_path, first)
    (first.folders[0] / "kernels.bin").write_bytes(b"compiled code")  # what a real compiler leaves behind
    compile_tiny(net, tmp_path, second)
    compile_tiny(net, tmp_path, half, dtype=torch.bfloat16)
    assert first.folders == second.folders
    assert first.folders[0].parent == tmp_path / "compiled"
    assert (second.folders[0] / "kernels.bin").read_bytes() == b"compiled code"
    record = json.loads((first.folders[0] / "build.json").read_text())
    assert record["model"] == "tiny" and record["cache_was_warm"] is True and record["psnr_db"] > 100
    assert half.folders[0] != first.folders[0] and half.folders[0].parent == tmp_path / "compiled"


class Counted(torch.nn.Module):
    """The eager reference, counting its runs."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.runs = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.runs += 1
        return self.net(x)


def test_a_warm_cache_checks_the_compiled_network_against_eager_without_running_eager(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Eager runs on the check tile at the first build only (x4plus: seconds per start on a CPU); later builds
    compare with its saved output, so one that has gone wrong since is still refused; a damaged file is remade."""
    net = tiny_net()
    reference = Counted(net)

    def build(make: Callable[[torch.nn.Module], compiled.Compiled]) -> torch.nn.Module:
        return compiled.compile_net(net, name="tiny", mode="torch", edge=24, device=CPU, dtype=torch.float32,
                                    layout=torch.contiguous_format, cache_root=tmp_path / "compiled",
                                    reference=reference, backend=Calls(make))

    first = build(lambda inner: inner)
    assert isinstance(first, compiled.CompiledNet) and reference.runs == 1
    [folder] = (tmp_path / "compiled").iterdir()
    assert json.loads((folder / "build.json").read_text())["reference_was_cached"] is False
    again = build(lambda inner: inner)
    assert isinstance(again, compiled.CompiledNet) and reference.runs == 1
    record = json.loads((folder / "build.json").read_text())
    assert record["reference_was_cached"] is True and record["psnr_db"] > 100

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert build(_inaccurate) is net  # checked against the saved output: 40 dB, refused
    assert reference.runs == 1 and "40.0 dB from eager fp32 on the check tile" in caplog.text

    (folder / compiled.REFERENCE_FILE).write_bytes(b"not an array")
    assert isinstance(build(lambda inner: inner), compiled.CompiledNet) and reference.runs == 2
    assert isinstance(build(lambda inner: inner), compiled.CompiledNet) and reference.runs == 2


# --------------------------------------------------------------------------------------------------------
# When nothing is compiled
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["off", "auto"])
def test_off_and_auto_without_openvino_on_a_cpu_leave_the_network_eager(
        tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU auto means OpenVINO or nothing: torch.compile there costs minutes for little gain."""
    monkeypatch.setattr(compiled, "openvino_available", lambda: False)
    net, backend = tiny_net(), Calls()
    assert compile_tiny(net, tmp_path, backend, mode=mode) is net
    assert backend.folders == [] and not (tmp_path / "compiled").exists()
    assert RealESRGANEngine(tmp_path, "cpu", compile=mode).compile == "off"


def test_auto_on_cuda_prefers_tensorrt_when_it_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "tensorrt_available", lambda: True)
    assert compiled.resolve("auto", "cuda") == "tensorrt"
    monkeypatch.setattr(compiled, "tensorrt_available", lambda: False)
    assert compiled.resolve("auto", "cuda") == "torch"
    assert compiled.resolve("tensorrt", "cpu") == "tensorrt"  # asked for by name: tried, and falls back if it fails


def test_auto_on_a_cpu_takes_openvino_when_it_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """On (``CPU_AUTO_OPENVINO`` says why); without OpenVINO importable, eager."""
    assert compiled.CPU_AUTO_OPENVINO and compiled.openvino_available()  # a dependency: installed everywhere
    assert compiled.resolve("auto", "cpu") == "openvino"
    monkeypatch.setattr(compiled, "CPU_AUTO_OPENVINO", False)
    assert compiled.resolve("auto", "cpu") == "off"
    monkeypatch.setattr(compiled, "CPU_AUTO_OPENVINO", True)
    monkeypatch.setattr(compiled, "openvino_available", lambda: False)
    assert compiled.resolve("auto", "cpu") == "off"
    assert compiled.resolve("openvino", "cpu") == "openvino"  # asked for by name: tried, and falls back if it fails


def test_enhancer_compile_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENHANCER_COMPILE", raising=False)
    assert EnhancerSettings.from_env().compile == "auto"
    monkeypatch.setenv("ENHANCER_COMPILE", " TensorRT ")
    assert EnhancerSettings.from_env().compile == "tensorrt"
    monkeypatch.setenv("ENHANCER_COMPILE", "OpenVINO")
    assert EnhancerSettings.from_env().compile == "openvino"
    monkeypatch.setenv("ENHANCER_COMPILE", "inductor")
    with pytest.raises(SettingsError, match="ENHANCER_COMPILE must be one of auto, off, torch, tensorrt, openvino"):
        EnhancerSettings.from_env()


# --------------------------------------------------------------------------------------------------------
# A compiler that fails falls back to eager, with one log line
# --------------------------------------------------------------------------------------------------------


def _raises(net: torch.nn.Module) -> compiled.Compiled:
    raise RuntimeError("inductor: C++ compile failed")


def _fails_first_run(net: torch.nn.Module) -> compiled.Compiled:
    def run(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    return run


def _nan(net: torch.nn.Module) -> compiled.Compiled:
    return lambda x: torch.full_like(net(x), float("nan"))


def _inaccurate(net: torch.nn.Module) -> compiled.Compiled:
    """Off by 0.01 everywhere: 40 dB, a difference that is small but visible in smooth gradients."""
    return lambda x: net(x) + 0.01


@pytest.mark.parametrize(("make", "reason"), [
    (_raises, "C++ compile failed"),
    (_fails_first_run, "illegal memory access"),
    (_nan, "non-finite output"),
    (_inaccurate, "40.0 dB from eager fp32 on the check tile, under 45 dB"),
])
def test_a_failing_compiler_leaves_the_eager_network_and_says_why_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make: Callable, reason: str
) -> None:
    net = tiny_net()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert compile_tiny(net, tmp_path, Calls(make)) is net
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1
    assert lines[0].startswith("tiny: torch compile for 24² float32 tiles failed") and reason in lines[0]
    assert lines[0].endswith("running eager")


def test_a_compiled_network_that_fails_later_runs_eager_from_then_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    net, breaks = tiny_net(), BreaksLater(RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"))
    wrapped = compile_tiny(net, tmp_path, Calls(breaks))
    assert isinstance(wrapped, compiled.CompiledNet)
    breaks.broken = True
    x = torch.rand(1, 3, 24, 24)
    with caplog.at_level(logging.WARNING, logger=LOGGER), torch.inference_mode():
        assert torch.equal(wrapped(x), net(x))
        assert torch.equal(wrapped(x), net(x))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "tiny: the compiled network failed (cuDNN error: CUDNN_STATUS_EXECUTION_FAILED); running eager from now on"]


def test_only_inputs_of_the_compiled_shape_take_the_compiled_network(tmp_path: Path) -> None:
    wrapped = compile_tiny(tiny_net(), tmp_path, Calls(), edge=24)
    assert isinstance(wrapped, compiled.CompiledNet) and wrapped.fixed_input == (24, 24)
    assert wrapped.uses_compiled(torch.empty(1, 3, 24, 24))
    for shape in [(1, 3, 20, 24), (1, 3, 24, 30), (2, 3, 24, 24)]:  # the batch size is part of the shape too
        assert not wrapped.uses_compiled(torch.empty(shape))


def test_a_network_compiled_for_any_size_takes_every_size_and_never_grows_tiles(tmp_path: Path) -> None:
    """OpenVINO's network takes any height and width: every tile takes it as it is, and its check tile is small
    (on a CPU, checking x4plus on a 420² tile would cost a minute at every start)."""
    backend = Calls()
    wrapped = compile_tiny(tiny_net(), tmp_path, backend, mode="openvino", edge=420)
    assert isinstance(wrapped, compiled.CompiledNet) and wrapped.dynamic and wrapped.fixed_input is None
    assert wrapped.shape == (1, 3, compiled.DYNAMIC_CHECK_EDGE, compiled.DYNAMIC_CHECK_EDGE)
    for shape in [(1, 3, 20, 24), (1, 3, 420, 420), (1, 3, 7, 501)]:
        assert wrapped.uses_compiled(torch.empty(shape))
    assert not wrapped.uses_compiled(torch.empty(2, 3, 24, 24))
    assert not wrapped.uses_compiled(torch.empty(1, 3, 24, 24, dtype=torch.float64))


@pytest.mark.parametrize(("window", "size", "grown"), [
    ((0, 74), 100, (0, 84)),  # the first tile: grows away from the image's edge, over real pixels
    ((54, 100), 100, (16, 100)),  # the last one: the same, the other way
    ((30, 114), 200, (30, 114)),  # already the compiled size
    ((40, 100), 200, None),  # short but inside the image: another tile size than the one compiled for
    ((0, 60), 60, None),  # an image shorter than the compiled size: eager, not padded
    ((0, 90), 90, None),  # larger than the compiled size
])
def test_edge_tiles_grow_inward_to_the_compiled_size(window: tuple[int, int], size: int,
                                                      grown: tuple[int, int] | None) -> None:
    """A compiled net takes one shape; the smaller tiles at a photo's edges get it by taking more of the photo,
    never synthetic padding (reflect-padding them measured 41–44 dB against eager on this file's photo)."""
    assert tiling.fixed_window(*window, size, 84) == grown


# --------------------------------------------------------------------------------------------------------
# Through the engine, on real weights
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eager_result(model_dir: Path) -> np.ndarray:
    return RealESRGANEngine(model_dir, "cpu").enhance(PHOTO, FAST, lambda *a: None).image


def _engine(model_dir: Path, monkeypatch: pytest.MonkeyPatch, backend: compiled.Backend) -> RealESRGANEngine:
    monkeypatch.setitem(compiled.BACKENDS, "torch", backend)
    return RealESRGANEngine(model_dir, "cpu", compile="torch", compile_tile=TILE)


def test_the_engine_gives_the_eager_picture_when_its_compiler_fails(
    model_dir: Path, eager_result: np.ndarray, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    engine = _engine(model_dir, monkeypatch, Calls(_inaccurate))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = engine.enhance(PHOTO, FAST, lambda *a: None)
    assert np.array_equal(result.image, eager_result)
    assert result.model == "realesr-animevideov3"
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].startswith("realesr-animevideov3: torch compile for 52² float32 tiles failed")


def test_edge_tiles_through_a_compiled_network_match_eager_within_45_db(
    model_dir: Path, eager_result: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every tile of this photo is at its edge and grows to the compiled 52²; with a "compiler" that changes
    nothing, what is left is the effect of the extra context, which must stay within the issue's bar."""
    backend = Calls()
    engine = _engine(model_dir, monkeypatch, backend)
    engine.enhance(PHOTO, EnhanceOptions(quality="fast", tile_size=0), lambda *a: None)  # loads and compiles
    before = backend.runs
    result = engine.enhance(PHOTO, FAST, lambda *a: None)
    assert result.tiles == 4 and backend.runs - before == 4  # all four tiles took the compiled network
    assert psnr(result.image, eager_result) >= compiled.MIN_PSNR_DB


def test_after_running_out_of_memory_smaller_tiles_run_eager_and_do_not_grow(tmp_path: Path) -> None:
    """The engine retries an out-of-memory tile with smaller tiles (tested with the engine); growing those back
    to the compiled size would use the memory the retry is meant to save, so from then on they run eager."""
    net, runs_out = tiny_net(), BreaksLater(SimulatedOOM("CUDA out of memory (simulated)"))
    wrapped = compile_tiny(net, tmp_path, Calls(runs_out), edge=24)
    rgb = np.random.default_rng(1).integers(0, 256, (40, 40, 3), np.uint8)

    def upscale(model: torch.nn.Module, tile: int) -> np.ndarray:
        return tiling.upscale_tiled(model, rgb, scale=2, tile=tile, pad=5, device=CPU, dtype=torch.float32,
                                    progress=lambda *a: None)

    runs_out.broken = True
    with pytest.raises(torch.OutOfMemoryError):
        upscale(wrapped, 14)  # 14 + 2 × 5 = 24: the compiled shape
    assert wrapped.fixed_input is None
    assert np.array_equal(upscale(wrapped, 7), upscale(net, 7))
