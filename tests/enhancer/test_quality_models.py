"""Quality levels are photo models: which model each level runs given the weights in the model folder, the
loading paths of the models whose weights cannot ship, and how a fleet reports them (presence → /api/v1/info).

RealESRGAN_x2plus and realesr-general-x4v3 have no registry that ships them and none can be downloaded here, so
their loading tests save randomly initialised state dicts of the real architectures as ``.pth`` files in a
temporary model folder. The arithmetic and shapes are the real models'; the pictures are not meaningful, and
nothing here is presented as a real model's output.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from bus.schemas import EnhanceOptions, EnhancerPresence
from bus.settings import NatsSettings, S3Settings, TaskSettings
from edge.registry import Registry, Seen
from edge.routes.system import fleet_quality_models, info
from edge.settings import EdgeSettings
from enhancer import weights
from enhancer.engines.realesrgan import RealESRGANEngine
from enhancer.engines.registry import GFPGAN_WEIGHTS, available_engines, benchmark_engines, quality_models
from enhancer.presence import Presence

from .photos import shrink

X2PLUS, GENERAL = "RealESRGAN_x2plus.pth", "realesr-general-x4v3.pth"


def test_each_level_runs_its_photo_model_when_its_weights_are_there(tmp_path: Path) -> None:
    # Nothing fetched: the shipped (ncnn-converted) models stand in, labelled as such.
    assert weights.quality_models(tmp_path) == {
        "fast": ("realesr-animevideov3", True),  # the anime model: only a fallback
        "medium": ("RealESRGAN_x4plus", True),
        "high": ("RealESRGAN_x4plus", False),  # x4plus ships: high is never a fallback
    }
    (tmp_path / GENERAL).write_bytes(b"")
    (tmp_path / X2PLUS).write_bytes(b"")
    assert weights.quality_models(tmp_path) == {
        "fast": ("realesr-general-x4v3", False),
        "medium": ("RealESRGAN_x2plus", False),
        "high": ("RealESRGAN_x4plus", False),
    }
    (tmp_path / GENERAL).unlink()
    assert weights.model_for("fast", tmp_path)[0].name == "realesr-animevideov3"
    assert weights.model_for("medium", tmp_path)[0].scale == 2


@pytest.fixture(scope="module")
def photo_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder with real-architecture, random-weight x2plus and general-x4v3 checkpoints, stored as
    upstream stores them (x2plus under ``params_ema``, general-x4v3 under ``params``)."""
    model_dir = tmp_path_factory.mktemp("photo-models")
    torch.manual_seed(0)
    torch.save({"params_ema": weights.x2plus_arch().state_dict()}, model_dir / X2PLUS)
    torch.save({"params": weights.general_x4v3_arch().state_dict()}, model_dir / GENERAL)
    return model_dir


def test_photo_models_load_strictly_on_their_real_architectures(photo_models: Path) -> None:
    x2 = weights.load_x2plus(photo_models)
    weights.x2plus_arch().load_state_dict(x2, strict=True)
    assert sum(v.numel() for v in x2.values()) == pytest.approx(16.7e6, rel=0.01)
    general = weights.load_general_x4v3(photo_models)
    weights.general_x4v3_arch().load_state_dict(general, strict=True)
    assert sum(v.numel() for v in general.values()) == pytest.approx(1.21e6, rel=0.01)  # 32 convs (anime: 16)


def test_a_photo_model_without_its_file_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(weights.WeightsError, match=r"RealESRGAN_x2plus\.pth is not in .*photoenhance models fetch"):
        weights.load_x2plus(tmp_path)


SMALL = np.ascontiguousarray(shrink(skimage.data.astronaut(), 48, 48)[:, :47])  # 48x47: an odd width


@pytest.fixture(scope="module")
def engine(photo_models: Path) -> RealESRGANEngine:
    return RealESRGANEngine(photo_models, "cpu")


def test_fast_runs_general_x4v3(engine: RealESRGANEngine) -> None:
    result = engine.enhance(SMALL, EnhanceOptions(quality="fast", tile_size=0), lambda *a: None)
    assert result.model == "realesr-general-x4v3" and result.image.shape == (192, 188, 3)


def test_medium_runs_x2plus_natively_at_2x_and_resizes_for_4x_as_the_original(engine: RealESRGANEngine) -> None:
    """x2plus pixel-unshuffles its input: an odd width is padded and cropped back; ×4 is its ×2 output resized
    with Lanczos (RealESRGANer's ``outscale``), never a second network pass."""
    x2 = engine.enhance(SMALL, EnhanceOptions(quality="medium", scale=2, tile_size=0), lambda *a: None)
    assert x2.model == "RealESRGAN_x2plus" and x2.image.shape == (96, 94, 3)
    x4 = engine.enhance(SMALL, EnhanceOptions(quality="medium", scale=4, tile_size=0), lambda *a: None)
    assert x4.model == "RealESRGAN_x2plus" and x4.image.shape == (192, 188, 3)
    assert np.array_equal(x4.image, cv2.resize(x2.image, (188, 192), interpolation=cv2.INTER_LANCZOS4))

    # Tiles of odd sizes (33 px: 48 = 33 + 15, 47 = 33 + 14) go through the same padding.
    tiled = engine.enhance(SMALL, EnhanceOptions(quality="medium", scale=2, tile_size=33), lambda *a: None)
    assert tiled.tiles == 4 and tiled.image.shape == x2.image.shape


def test_weights_fetched_while_running_are_used_from_the_next_job(tmp_path: Path, photo_models: Path) -> None:
    engine = RealESRGANEngine(tmp_path, "cpu")
    opts = EnhanceOptions(quality="fast", tile_size=0)
    assert engine.enhance(SMALL, opts, lambda *a: None).model == "realesr-animevideov3"
    (tmp_path / GENERAL).write_bytes((photo_models / GENERAL).read_bytes())  # as `photoenhance models fetch` would
    assert engine.enhance(SMALL, opts, lambda *a: None).model == "realesr-general-x4v3"


# ----------------------------------------------------------------------------------------------------------
# The fleet says which model each level runs: presence → the edge's registry → /api/v1/info
# ----------------------------------------------------------------------------------------------------------


def beat(model_dir: Path, worker: str, engines: list[str] | None = None) -> EnhancerPresence:
    engines = available_engines(model_dir) if engines is None else engines
    presence = Presence(None, worker_id=worker, heartbeat=5.0, device="cpu", engines=engines,  # type: ignore[arg-type]
                        capacity=1, counters=lambda: (0, 0, 0), model_dir=model_dir)
    return EnhancerPresence.decode(presence.snapshot("alive").encode())  # as it travels


def test_presence_carries_each_levels_model(tmp_path: Path) -> None:
    p = beat(tmp_path, "w")
    assert p.quality_models == {"fast": "realesr-animevideov3", "medium": "RealESRGAN_x4plus",
                                "high": "RealESRGAN_x4plus"}
    assert p.fallback_levels == ["fast", "medium"]
    (tmp_path / GENERAL).write_bytes(b"")
    (tmp_path / GFPGAN_WEIGHTS).write_bytes(b"")
    p = beat(tmp_path, "w")  # read again at every beat: weights fetched meanwhile show at once
    assert p.quality_models["fast"] == "realesr-general-x4v3" and p.fallback_levels == ["medium"]
    # A benchmark stand-in engine runs no Real-ESRGAN model: it names none.
    assert quality_models(benchmark_engines(), tmp_path) == {}
    assert beat(tmp_path, "w", benchmark_engines()).quality_models == {}


def registry_of(*beats: EnhancerPresence, stale: tuple[str, ...] = ()) -> Registry:
    registry = Registry(None)  # type: ignore[arg-type]  # fed directly, as its KV watch would
    now = time.time()
    for b in beats:
        registry._seen[b.worker_id] = Seen(b, now - (60 if b.worker_id in stale else 0))
    return registry


def test_info_reports_which_model_each_level_uses(tmp_path: Path) -> None:
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    for name in (GENERAL, X2PLUS):
        (fetched / name).write_bytes(b"")
    bare = tmp_path / "bare"
    bare.mkdir()
    settings = EdgeSettings(nats=NatsSettings(), s3=S3Settings(), tasks=TaskSettings())

    def fleet(*beats: EnhancerPresence, stale: tuple[str, ...] = ()) -> dict:
        res = SimpleNamespace(registry=registry_of(*beats, stale=stale), settings=settings)
        return asyncio.run(info(res)).model_dump(mode="json")  # type: ignore[arg-type]

    body = fleet(beat(fetched, "a"))
    assert body["quality_models"] == {
        "fast": {"model": "realesr-general-x4v3", "fallback": False},
        "medium": {"model": "RealESRGAN_x2plus", "fallback": False},
        "high": {"model": "RealESRGAN_x4plus", "fallback": False},
    }
    assert body["enhancers"][0]["quality_models"]["medium"] == "RealESRGAN_x2plus"
    assert body["features"]["face_strength"] == EnhanceOptions().face_strength == 0.7

    body = fleet(beat(bare, "b"))
    assert body["quality_models"]["fast"] == {"model": "realesr-animevideov3", "fallback": True}
    assert body["enhancers"][0]["fallback_levels"] == ["fast", "medium"]

    # Two enhancers that differ: both models are named and the level is marked (a job may get the stand-in).
    body = fleet(beat(fetched, "a"), beat(bare, "b"))
    assert body["quality_models"]["fast"] == {"model": "realesr-animevideov3 / realesr-general-x4v3",
                                              "fallback": True}
    # Only healthy enhancers count; with none, no level is claimed.
    assert fleet(beat(fetched, "a"), beat(bare, "b"), stale=("b",))["quality_models"]["fast"]["fallback"] is False
    assert fleet()["quality_models"] == {}


def test_fleet_quality_models_reads_old_heartbeats() -> None:
    """An enhancer of an earlier version sends neither field: it is simply not counted for any level."""
    rows = [{"status": "healthy"}, {"status": "healthy", "quality_models": {"high": "RealESRGAN_x4plus"}}]
    assert {q: m.model_dump() for q, m in fleet_quality_models(rows).items()} == {
        "high": {"model": "RealESRGAN_x4plus", "fallback": False}}


def test_options_default_face_strength_is_the_documented_one() -> None:
    assert replace(EnhanceOptions(), face_strength=0).face_strength == 0


def test_a_damaged_photo_model_fails_the_job_with_a_sentence(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    """The person reads which model and what to do meanwhile (no server path); the operator's log says where."""
    from enhancer.engines import EngineError

    (tmp_path / GENERAL).write_bytes(b"not a checkpoint")
    engine = RealESRGANEngine(tmp_path, "cpu")
    with pytest.raises(EngineError, match=r"realesr-general-x4v3 model could not be loaded .*another quality level"
                       ) as raised:
        engine.enhance(SMALL, EnhanceOptions(quality="fast", tile_size=0), lambda *a: None)
    assert str(tmp_path) not in str(raised.value)
    assert f"from {tmp_path} failed" in caplog.text and "photoenhance models fetch" in caplog.text
