"""``ENHANCER_COMPILE=openvino`` for real, on the CPU: the fast level's shipped stand-in (realesr-animevideov3)
converted once, then read back from the cache folder at the next start, and the whole photo as eager makes it.

The one test in the suite that runs a real compiler (the others use stand-ins, ``test_compiled.py``): converting
this small model takes a few seconds; its speed is measured outside the suite (docs/performance.md).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from enhancer.engines import compiled
from enhancer.engines.base import EnhanceOptions
from enhancer.engines.realesrgan import RealESRGANEngine
from photoenhance.stack import ROOT

from .photos import psnr, shrink

#: As the engine imports it (a dependency of the package): with its telemetry cut off.
openvino = compiled._import_openvino()

#: 300×200, smaller than the default 400-pixel tile: one tile, of a size no fixed-shape compiler would take.
PHOTO = shrink(skimage.data.astronaut(), 300, 200)
FAST = EnhanceOptions(quality="fast")


def weights_of(model_dir: Path, tmp_path: Path) -> Path:
    """A model folder with the session's weights (linked) and a compiled/ folder of the test's own."""
    models = tmp_path / "models"
    models.mkdir()
    for f in model_dir.iterdir():
        if f.is_file():
            (models / f.name).symlink_to(f)
    return models


def test_openvino_makes_the_eager_photo_and_the_next_start_reads_its_model_from_the_cache(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    eager = RealESRGANEngine(model_dir, "cpu").enhance(PHOTO, FAST, lambda *a: None)
    models = weights_of(model_dir, tmp_path)
    conversions: list[int] = []
    convert = openvino.convert_model

    def counted(*args: object, **kwargs: object) -> object:
        conversions.append(1)
        return convert(*args, **kwargs)

    monkeypatch.setattr(openvino, "convert_model", counted)

    with caplog.at_level(logging.INFO, logger="enhancer.engines.compiled"):
        engine = RealESRGANEngine(models, "cpu", compile="openvino")
        first = engine.enhance(PHOTO, FAST, lambda *a: None)
        assert conversions == [1]
        (net,) = engine._models.values()
        assert isinstance(net, compiled.CompiledNet) and net.compiled is not None  # still on OpenVINO after the photo
        (folder,) = (models / "compiled").iterdir()
        assert (folder / "model.xml").is_file() and (folder / "model.bin").is_file()

        second = RealESRGANEngine(models, "cpu", compile="openvino").enhance(PHOTO, FAST, lambda *a: None)
    assert conversions == [1]  # read from the cache folder, not converted again
    assert json.loads((folder / "build.json").read_text())["cache_was_warm"] is True
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    compiled_lines = [r.getMessage() for r in caplog.records if "compiled with openvino" in r.getMessage()]
    assert len(compiled_lines) == 2 and compiled_lines[1].endswith(", reused)")

    assert first.model == second.model == eager.model == "realesr-animevideov3"
    assert psnr(first.image, eager.image) >= compiled.MIN_PSNR_DB
    assert np.array_equal(second.image, first.image)


#: An enhancer process converting a model to OpenVINO: what OpenVINO's converter would report usage with.
CONVERT_AND_SAY_WHO_LISTENS = """
import sys
import numpy as np
from enhancer.engines.base import EnhanceOptions
from enhancer.engines.realesrgan import RealESRGANEngine
RealESRGANEngine(sys.argv[1], "cpu", compile="openvino").enhance(
    np.full((48, 48, 3), 128, np.uint8), EnhanceOptions(quality="fast"), lambda *a: None)
from openvino.tools.ovc import convert_impl
print(sys.modules.get("openvino_telemetry"), convert_impl.tm.__name__)
"""


def test_converting_a_model_reports_nothing_to_anyone(model_dir: Path, tmp_path: Path) -> None:
    """OpenVINO's converter sends each conversion to Google Analytics unless the host opted out (no consent file
    counts as consent for it). In a fresh process, as an enhancer converts, it gets the no-op stub instead."""
    models = weights_of(model_dir, tmp_path)
    done = subprocess.run([sys.executable, "-c", CONVERT_AND_SAY_WHO_LISTENS, str(models)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["None", "openvino.tools.ovc.telemetry_stub"], done.stdout
    assert (models / "compiled").is_dir()  # it did convert
