"""``ENHANCER_COMPILE=openvino`` for real, on the CPU: the fast level's shipped stand-in (realesr-animevideov3)
converted once, then read back from the cache folder at the next start, and the whole photo as eager makes it.

The one test in the suite that runs a real compiler (the others use stand-ins, ``test_compiled.py``): converting
this small model takes a few seconds; its speed is measured outside the suite (docs/performance.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from enhancer.engines import compiled
from enhancer.engines.base import EnhanceOptions
from enhancer.engines.realesrgan import RealESRGANEngine

from .photos import shrink

openvino = pytest.importorskip("openvino")

#: 300×200, smaller than the default 400-pixel tile: one tile, of a size no fixed-shape compiler would take.
PHOTO = shrink(skimage.data.astronaut(), 300, 200)
FAST = EnhanceOptions(quality="fast")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_openvino_makes_the_eager_photo_and_the_next_start_reads_its_model_from_the_cache(
    engine_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    eager = RealESRGANEngine(engine_model_dir, "cpu").enhance(PHOTO, FAST, lambda *a: None)  # converts the weights
    model_dir = tmp_path / "models"  # the session's weights, with a compiled/ folder of this test's own
    model_dir.mkdir()
    for f in engine_model_dir.iterdir():
        if f.is_file():
            (model_dir / f.name).symlink_to(f)
    conversions: list[int] = []
    convert = openvino.convert_model

    def counted(*args: object, **kwargs: object) -> object:
        conversions.append(1)
        return convert(*args, **kwargs)

    monkeypatch.setattr(openvino, "convert_model", counted)

    with caplog.at_level(logging.INFO, logger="enhancer.engines.compiled"):
        engine = RealESRGANEngine(model_dir, "cpu", compile="openvino")
        first = engine.enhance(PHOTO, FAST, lambda *a: None)
        assert conversions == [1]
        (net,) = engine._models.values()
        assert isinstance(net, compiled.CompiledNet) and net.compiled is not None  # still on OpenVINO after the photo
        (folder,) = (model_dir / "compiled").iterdir()
        assert (folder / "model.xml").is_file() and (folder / "model.bin").is_file()

        second = RealESRGANEngine(model_dir, "cpu", compile="openvino").enhance(PHOTO, FAST, lambda *a: None)
    assert conversions == [1]  # read from the cache folder, not converted again
    assert json.loads((folder / "build.json").read_text())["cache_was_warm"] is True
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    compiled_lines = [r.getMessage() for r in caplog.records if "compiled with openvino" in r.getMessage()]
    assert len(compiled_lines) == 2 and compiled_lines[1].endswith(", reused)")

    assert first.model == second.model == eager.model == "realesr-animevideov3"
    assert _psnr(first.image, eager.image) >= compiled.MIN_PSNR_DB
    assert np.array_equal(second.image, first.image)
