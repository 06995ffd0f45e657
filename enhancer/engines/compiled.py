"""Compiled inference for the super-resolution networks (``ENHANCER_COMPILE``), with eager PyTorch as the fallback.

Why: eager fp16 x4plus reaches under 10 % of an H200's tensor-core peak (docs/performance.md); a compiler fuses
the many small pointwise kernels between the convolutions (leaky ReLU, the RRDB's ``x * 0.2 + residual``, PReLU).

How: the network is compiled for one fixed input shape, the service's default tile plus its context padding
(420² for 400-pixel tiles), so nothing recompiles while jobs run. The windows of the tiles at a photo's edges,
which are smaller, grow inward to that shape (``tiling.fixed_window``): more real context, never synthetic
padding (reflect-padding them instead measured 41–44 dB against eager on a small test photo; growing them,
66 dB). Any other shape (other tile sizes, ``tile_size=0``, photos smaller than a tile, the smaller tiles after
an out-of-memory retry, whose point is to use less memory) runs eager; OpenVINO's is the exception (below).

Compilers: ``torch`` is torch.compile (inductor); ``tensorrt`` is torch-tensorrt, whose serialized engine is
saved in the cache folder and loaded at the next start; ``openvino`` converts the network to OpenVINO's IR
(fp32 weights) once, saves it in the cache folder, and compiles it for the CPU in fp32 at every start (about a
second). OpenVINO's model takes any height and width (:data:`DYNAMIC_SHAPE`): on a CPU it runs them as fast as
a fixed shape, so every tile takes it, the edge tiles do not grow (on a CPU that extra work would cost more
than the compiler gains), and photos smaller than a tile take it too. ``auto`` compiles on CUDA only
(TensorRT when it imports, else torch.compile) and OpenVINO on a CPU (:data:`CPU_AUTO_OPENVINO`); torch.compile
on a CPU costs minutes for a small gain.

Cache: ``MODEL_DIR/compiled/<key>/``, the key naming the model, a digest of its weights, the device (name and
compute capability), torch and compiler versions, shape and dtype (:func:`cache_key`); torch.compile's own
cache (inductor's ``TORCHINDUCTOR_CACHE_DIR``) is pointed there while it compiles. Eager's output on the check
tile is kept there too, so later starts check the compiled network without running eager.

Nothing here ever fails a job: an import error, a compile error, a failing first run, non-finite output, or
output further than :data:`MIN_PSNR_DB` from eager fp32 on the check tile logs one line and the model runs
eager. Runs after that which fail (other than out of memory, which the engine handles) switch it to eager too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from enhancer.cache_files import first_line, save_atomically
from enhancer.engines._memory import is_oom
from enhancer.engines.registry import COMPILE_MODES

log = logging.getLogger(__name__)

#: Compiled output must be at least this close to eager fp32 (PSNR on [0, 1], the issue's bar).
MIN_PSNR_DB = 45.0
#: torch.compile mode on CUDA: autotuned kernels, but no CUDA graphs; each slot runs on its own thread and
#: CUDA stream, which CUDA-graph trees (one pool per thread, outputs overwritten at the next replay) do not suit.
CUDA_MODE = "max-autotune-no-cudagraphs"
#: Whether ``auto`` on a CPU means OpenVINO (when it imports). On: through the engine on two cores, fp32,
#: OpenVINO measured 1.75–1.84× eager on a 512² photo at fast (animevideov3, 98 dB from eager), the CPU's default
#: level, and 1.26× on 128² at high (x4plus, 89.5 dB): faster on both at the same picture (issue #14).
CPU_AUTO_OPENVINO = True
#: Compilers whose networks take any height and width (batch, channels and dtype still fixed); the others take
#: exactly the compiled shape.
DYNAMIC_SHAPE = frozenset({"openvino"})
#: Edge of the example OpenVINO traces the network with (the traced graph does not depend on it; tracing time does).
TRACE_EDGE = 64
#: Edge of the check tile for a network that takes any size: any size shows its accuracy, and on a CPU the check
#: (compiled and eager fp32) on a 420² tile would cost x4plus over a minute at every start.
DYNAMIC_CHECK_EDGE = 128

Compiled = Callable[[torch.Tensor], torch.Tensor]
Backend = Callable[[torch.nn.Module, torch.Tensor, Path], Compiled]
"""(network, an input of the compiled shape, its cache folder) → the compiled network, already run once on that
input (compilers compile lazily: the first run is part of the build, and may fail like it)."""

#: One compile at a time per process: torch.compile's cache folder is a process-wide environment variable, and
#: the slots that load the same model one after another then find the first one's work in the cache.
_BUILD_LOCK = threading.Lock()


class CompileRejected(RuntimeError):
    """The compiled network's output was unusable (non-finite, or too far from eager fp32)."""


def tensorrt_available() -> bool:
    """torch-tensorrt imports (it needs a CUDA build of TensorRT; the import alone checks that)."""
    try:
        import torch_tensorrt  # noqa: F401
    except Exception:  # ImportError, or a broken TensorRT install failing at import
        return False
    return True


#: OpenVINO's telemetry package. Its model converter reports each conversion to Google Analytics unless the host
#: opted out (no consent file counts as consent there); a self-hosted photo service must not phone home. With the
#: package unimportable (``None`` in ``sys.modules``), OpenVINO uses its own no-op stub instead.
_OPENVINO_TELEMETRY = ("openvino_telemetry", "openvino_telemetry.backend", "openvino_telemetry.backend.backend_ga4")


def _import_openvino() -> Any:
    """``openvino``, with its telemetry cut off (:data:`_OPENVINO_TELEMETRY`) before anything of it loads."""
    for name in _OPENVINO_TELEMETRY:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    import openvino

    return openvino


def openvino_available() -> bool:
    """OpenVINO imports (a dependency of the package, but an install without it still runs, eager)."""
    try:
        _import_openvino()
    except Exception:  # ImportError, or a broken install failing at import
        return False
    return True


def resolve(mode: str, device: torch.device | str) -> str:
    """``off``, ``torch``, ``tensorrt`` or ``openvino`` for ``ENHANCER_COMPILE=mode`` on ``device``."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}")
    if mode != "auto":
        return mode
    if torch.device(device).type != "cuda":
        return "openvino" if CPU_AUTO_OPENVINO and openvino_available() else "off"
    return "tensorrt" if tensorrt_available() else "torch"


# --------------------------------------------------------------------------------------------------------
# The cache key
# --------------------------------------------------------------------------------------------------------


def weights_digest(net: torch.nn.Module) -> str:
    """SHA-256 of the network's tensors (names, shapes, dtypes, bytes): other weights, other compiled program."""
    h = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def device_id(device: torch.device | str) -> str:
    """What compiled code depends on: the GPU's name and compute capability (kernels are tuned per chip)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} sm{major}{minor}"
    return f"{device.type} {platform.machine()}"


def compiler_version(kind: str) -> str:
    """The versions whose change invalidates compiled code: torch (with its CUDA and cuDNN), TensorRT's, and
    OpenVINO's (its saved IR is read back by the same version only)."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    base = f"torch {torch.__version__} cuda {torch.version.cuda} cudnn {cudnn}"
    if kind == "tensorrt":
        import tensorrt
        import torch_tensorrt

        return f"{base} torch_tensorrt {torch_tensorrt.__version__} tensorrt {tensorrt.__version__}"
    if kind == "openvino":
        return f"{base} openvino {_import_openvino().__version__}"
    return base


def cache_key(*, model: str, weights: str, device: str, versions: str, compiler: str, shape: tuple[int, ...],
              dtype: torch.dtype) -> str:
    """A folder name for one compiled network: readable prefix, then a digest of every component."""
    fields = {"model": model, "weights": weights, "device": device, "versions": versions, "compiler": compiler,
              "shape": list(shape), "dtype": str(dtype)}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    size = "x".join(str(s) for s in shape[-2:])
    return f"{model}-{compiler}-{str(dtype).removeprefix('torch.')}-{size}-{digest}"


# --------------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def inductor_cache(folder: Path) -> Iterator[None]:
    """Point inductor's on-disk cache (generated kernels, autotuning results) at ``folder`` while compiling."""
    name = "TORCHINDUCTOR_CACHE_DIR"
    before = os.environ.get(name)
    os.environ[name] = str(folder)
    clear = _inductor_clear_caches()
    clear()  # its in-memory caches remember the folder
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
        clear()


def _inductor_clear_caches() -> Callable[[], None]:
    try:
        from torch._inductor.utils import clear_caches
    except ImportError:  # private API; without it the folder still takes effect for what was never cached
        return lambda: None
    return clear_caches


def torch_backend(net: torch.nn.Module, example: torch.Tensor, folder: Path) -> Compiled:
    """torch.compile for exactly ``example``'s shape; its first run (the compile) writes to ``folder``."""
    mode = CUDA_MODE if example.is_cuda else None
    with inductor_cache(folder):
        fn = torch.compile(net, mode=mode, dynamic=False, fullgraph=True)
        with torch.inference_mode():
            fn(example)
    return fn


def tensorrt_backend(net: torch.nn.Module, example: torch.Tensor, folder: Path) -> Compiled:
    """torch-tensorrt in the network's own precision (the engine hands it an fp16 net on CUDA); the serialized
    engine is ``folder/engine.ep``, loaded instead of built when it is there."""
    import torch_tensorrt

    path = folder / "engine.ep"
    if path.is_file():
        try:
            fn = torch_tensorrt.load(str(path)).module()
            with torch.inference_mode():
                fn(example)
            return fn
        except Exception as exc:
            log.warning("cached TensorRT engine %s is unusable (%s); building it again", path, first_line(exc))
    plain = example.clone()  # a normal tensor (``example`` is an inference tensor) for torch.export to trace
    fn = torch_tensorrt.compile(net, ir="dynamo", inputs=[plain], enabled_precisions={example.dtype},
                                min_block_size=1)
    with torch.inference_mode():
        fn(example)
    save_atomically(path, lambda tmp: torch_tensorrt.save(fn, str(tmp), inputs=[plain]), "the TensorRT engine")
    return fn


#: OpenVINO on the CPU: fp32 arithmetic (its default there may be bf16 on CPUs that have it, which is not what
#: was checked against eager), one stream for the lowest latency per tile.
OPENVINO_CONFIG: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


def openvino_backend(net: torch.nn.Module, example: torch.Tensor, folder: Path) -> Compiled:
    """OpenVINO for the CPU, fp32, any height and width: the IR (``folder/model.xml`` and ``.bin``, fp32 weights)
    is read when it is there, else converted from ``net`` (seconds) and saved; compiling it for the CPU takes
    about a second, with as many threads as torch uses."""
    ov = _import_openvino()

    if example.device.type != "cpu" or example.dtype != torch.float32:
        raise RuntimeError(f"OpenVINO runs fp32 on the CPU here, not {str(example.dtype).removeprefix('torch.')} "
                           f"on {example.device.type}")
    core = ov.Core()
    path = folder / "model.xml"
    model = None
    if path.is_file() and path.with_suffix(".bin").is_file():
        try:
            model = core.read_model(str(path))
        except Exception as exc:
            log.warning("cached OpenVINO model %s is unusable (%s); converting it again", path, first_line(exc))
    if model is None:
        started = time.perf_counter()
        # A normal tensor (``example`` is an inference tensor), small: tracing time grows with its size.
        plain = example[..., :TRACE_EDGE, :TRACE_EDGE].clone()
        with warnings.catch_warnings():  # it traces with torch.jit: deprecation and shape-assert warnings
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            model = ov.convert_model(net, example_input=plain, input=[(*example.shape[:2], -1, -1)])
        log.info("converted %s to OpenVINO in %.1f s", folder.name, time.perf_counter() - started)
        _save_openvino(ov, model, path)
    config = {**OPENVINO_CONFIG, "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    # compile_model compiles now, not at the first run: the build's check is the first run, no need for another.
    request = core.compile_model(model, "CPU", config).create_infer_request()
    lock = threading.Lock()  # one request, reused: not safe to run from two threads at once

    def run(x: torch.Tensor) -> torch.Tensor:
        with lock:
            out = request.infer({0: x.contiguous().numpy()}, share_inputs=True, share_outputs=False)[0]
        return torch.from_numpy(out)

    return run


def _save_openvino(ov: object, model: object, path: Path) -> None:
    """Save the IR beside ``path`` under a temporary name, then move it in, weights first: a reader never sees a
    half-written model (the ``.xml`` names no file; its weights are the ``.bin`` of the same name)."""
    tmp = path.parent / f".tmp.{os.getpid()}.{threading.get_ident()}"
    try:
        tmp.mkdir(exist_ok=True)
        ov.save_model(model, str(tmp / path.name), compress_to_fp16=False)  # type: ignore[attr-defined]
        os.replace(tmp / path.with_suffix(".bin").name, path.with_suffix(".bin"))
        os.replace(tmp / path.name, path)
    except Exception as exc:  # not cached: converted again at the next start, nothing worse
        log.warning("could not save the OpenVINO model to %s: %s", path, first_line(exc))
    finally:
        for leftover in tmp.glob("*") if tmp.is_dir() else ():
            with contextlib.suppress(OSError):
                leftover.unlink()
        with contextlib.suppress(OSError):
            tmp.rmdir()


BACKENDS: dict[str, Backend] = {"torch": torch_backend, "tensorrt": tensorrt_backend, "openvino": openvino_backend}


# --------------------------------------------------------------------------------------------------------
# The compiled network
# --------------------------------------------------------------------------------------------------------


class CompiledNet(torch.nn.Module):
    """The eager network and its compiled form for one input shape; see the module docstring for which runs."""

    def __init__(self, net: torch.nn.Module, compiled: Compiled, shape: tuple[int, int, int, int],
                 dtype: torch.dtype, layout: torch.memory_format, name: str, dynamic: bool = False) -> None:
        super().__init__()
        self.net = net
        # A plain attribute, not a registered submodule (torch.compile's result is one): ``net`` owns the weights.
        object.__setattr__(self, "compiled", compiled)
        self.shape, self.dtype, self.layout, self.name = shape, dtype, layout, name
        #: The compiled network takes any height and width (:data:`DYNAMIC_SHAPE`); ``shape`` is then the one checked.
        self.dynamic = dynamic
        #: Edge tiles grow to the compiled shape (:attr:`fixed_input`) until the compiled net runs out of memory.
        self.grow_tiles = True

    @property
    def fixed_input(self) -> tuple[int, int] | None:
        """(height, width) that edge tiles should grow to (``tiling.fixed_window``); None once the compiled net
        is off, or once it ran out of memory: the engine then retries with smaller tiles to use less memory,
        which growing them back would defeat; None for a compiled net that takes any size."""
        if self.compiled is None or not self.grow_tiles or self.dynamic:
            return None
        return self.shape[2], self.shape[3]

    def uses_compiled(self, x: torch.Tensor) -> bool:
        """Whether ``x`` goes through the compiled network: exactly its shape (any height and width when it is
        dynamic) and dtype, nothing else."""
        if self.compiled is None or x.dtype != self.dtype or x.dim() != 4:
            return False
        return tuple(x.shape[:2]) == self.shape[:2] if self.dynamic else tuple(x.shape) == self.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.uses_compiled(x):
            return self.net(x)
        try:
            return self.compiled(x.contiguous(memory_format=self.layout))  # type: ignore[misc]
        except Exception as exc:
            if is_oom(exc):
                self.grow_tiles = False
                raise  # the engine retries with smaller tiles, which now run eager
            log.warning("%s: the compiled network failed (%s); running eager from now on", self.name,
                        first_line(exc))
            self.compiled = None
            return self.net(x)


def check_tile(shape: tuple[int, int, int, int], device: torch.device, dtype: torch.dtype,
               layout: torch.memory_format) -> torch.Tensor:
    """A deterministic, photo-like input in [0, 1]: smooth gradients, edges, fine texture and a little noise,
    so that the accuracy check sees the value ranges a photo produces (a flat or random input would not)."""
    n, c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(14)
    planes = []
    for k in range(c):
        smooth = 0.5 + 0.35 * np.sin(xx / (w / (2 + k)) + yy / (h / 3))
        texture = 0.08 * np.sin(xx * (0.9 + 0.2 * k)) * np.cos(yy * 1.3)
        edges = 0.2 * ((xx // max(w // 5, 1) + yy // max(h // 4, 1)) % 2)
        planes.append(smooth + texture + edges + rng.normal(0, 0.02, (h, w)))
    img = np.clip(np.stack(planes), 0.0, 1.0)[None].repeat(n, axis=0)
    return torch.from_numpy(img).to(device=device, dtype=dtype).contiguous(memory_format=layout)


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two images in [0, 1] (clamped first, as the engine clamps), in dB; inf when identical."""
    mse = float(torch.mean((a.float().clamp(0, 1) - b.float().clamp(0, 1)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def build(net: torch.nn.Module, *, name: str, kind: str, shape: tuple[int, int, int, int],
          device: torch.device, dtype: torch.dtype, layout: torch.memory_format, cache_root: Path,
          reference: torch.nn.Module | None = None, backend: Backend | None = None,
          min_psnr: float = MIN_PSNR_DB) -> tuple[CompiledNet, dict[str, object]]:
    """Compile ``net`` (already on ``device`` in ``dtype``) and check it; raise whatever goes wrong.

    ``reference``: the same network in fp32 (on any device; moved to ``device`` for the check and back), for the
    accuracy check; without it ``net`` is the reference, which is right only when ``net`` is fp32.
    Returns the compiled network and what was measured (also written to the cache folder's ``build.json``).
    """
    if kind in ("tensorrt", "openvino"):
        layout = torch.contiguous_format  # they take NCHW and pick their own internal layouts
    versions = compiler_version(kind)
    digest = weights_digest(net if reference is None else reference)
    key = cache_key(model=name, weights=digest, device=device_id(device), versions=versions, compiler=kind,
                    shape=shape, dtype=dtype)
    folder = _cache_folder(cache_root, key)
    cached = folder.is_dir() and any(folder.iterdir())
    with torch.inference_mode():  # an inference tensor, like the engine's tiles: other ones would recompile
        example = check_tile(shape, device, dtype, layout)
    started = time.perf_counter()
    with _BUILD_LOCK:
        fn = (backend or BACKENDS[kind])(net, example, folder)
        with torch.inference_mode():
            out = fn(example)
        _sync(device)
    seconds = time.perf_counter() - started
    if not bool(torch.isfinite(out).all()):
        raise CompileRejected("non-finite output on the check tile")
    expected, reused = _reference_output(net if reference is None else reference, example, device, folder,
                                         tuple(out.shape))
    psnr = psnr_db(out, expected)
    if psnr < min_psnr:
        raise CompileRejected(f"output {psnr:.1f} dB from eager fp32 on the check tile, under {min_psnr:g} dB")
    record: dict[str, object] = {"model": name, "compiler": kind, "versions": versions, "device": device_id(device),
                                 "shape": list(shape), "dtype": str(dtype), "psnr_db": round(psnr, 2),
                                 "build_s": round(seconds, 2), "cache": str(folder), "cache_was_warm": cached,
                                 "reference_was_cached": reused}
    save_atomically(folder / "build.json", lambda tmp: tmp.write_text(json.dumps(record, indent=1)), "the build record")
    return CompiledNet(net, fn, shape, dtype, layout, name, dynamic=kind in DYNAMIC_SHAPE), record


def compile_net(net: torch.nn.Module, *, name: str, mode: str, edge: int, device: torch.device,
                dtype: torch.dtype, layout: torch.memory_format, cache_root: Path,
                reference: torch.nn.Module | None = None, backend: Backend | None = None,
                min_psnr: float = MIN_PSNR_DB) -> torch.nn.Module:
    """``net`` compiled for ``edge``² inputs (a tile with its context padding) per ``mode``
    (``ENHANCER_COMPILE``), or ``net`` itself: when ``mode`` resolves to off, or when anything goes wrong,
    which is logged in one line. Never raises."""
    try:
        kind = resolve(mode, device)
    except ValueError as exc:
        log.warning("%s: %s; running eager", name, exc)
        return net
    if kind == "off":
        return net
    precision = str(dtype).removeprefix("torch.")
    if kind in DYNAMIC_SHAPE:  # any size takes it: check it on a small tile
        edge = min(edge, DYNAMIC_CHECK_EDGE)
        tiles = f"{precision} tiles of any size (checked on {edge}²)"
    else:
        tiles = f"{edge}² {precision} tiles"
    try:
        compiled, record = build(net, name=name, kind=kind, shape=(1, 3, edge, edge), device=device, dtype=dtype,
                                 layout=layout, cache_root=cache_root, reference=reference, backend=backend,
                                 min_psnr=min_psnr)
    except Exception as exc:  # whatever the compiler does, the job runs
        log.warning("%s: %s compile for %s failed (%s: %s); running eager", name, kind, tiles, type(exc).__name__,
                    first_line(exc))
        return net
    log.info("%s: compiled with %s for %s in %.1f s (%.1f dB from eager fp32; cache %s%s)", name, kind, tiles,
             record["build_s"], record["psnr_db"], record["cache"], ", reused" if record["cache_was_warm"] else "")
    return compiled


#: Eager fp32's output on the check tile, in the cache folder (float32 ``.npy``): the key names the weights, the
#: shape, the device and the versions, so it is what eager would make of the tile again.
REFERENCE_FILE = "reference.npy"


def _reference_output(reference: torch.nn.Module, example: torch.Tensor, device: torch.device, folder: Path,
                      shape: tuple[int, ...]) -> tuple[torch.Tensor, bool]:
    """What the eager ``reference`` makes of ``example`` (of ``shape``), and whether it was read from ``folder``.

    Read when the first build saved it there, else run on ``device`` in its own dtype and saved: a start with a
    warm cache still checks the compiled network against eager fp32 without running eager (x4plus on two cores:
    about 4 s per start). A file that cannot be read or has another shape is made again.
    """
    path = folder / REFERENCE_FILE
    with contextlib.suppress(OSError, ValueError):
        saved = np.load(path, allow_pickle=False)
        if saved.shape == shape and saved.dtype == np.float32:
            return torch.from_numpy(saved).to(example.device), True
    param = next(reference.parameters())
    home = param.device
    try:
        with torch.inference_mode():
            out = reference.to(device)(example.to(param.dtype))
    finally:
        reference.to(home)
    saved = out.detach().float().cpu().numpy()
    save_atomically(path, lambda tmp: np.save(tmp, saved, allow_pickle=False), "the check tile's eager output")
    return out, False


def _cache_folder(root: Path, key: str) -> Path:
    """``root/key``, created; a temporary folder when ``root`` cannot be written (compiled, just not kept)."""
    folder = Path(root) / key
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError as exc:
        log.warning("cannot keep compiled networks in %s (%s); they are rebuilt at every start", root, exc)
        return Path(tempfile.mkdtemp(prefix=f"{key}-"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
