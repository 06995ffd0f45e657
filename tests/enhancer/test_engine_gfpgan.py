"""GFPGAN engine: detect → align → restore → paste back, on the real GFPGANv1Clean architecture.

CI has no GFPGAN weights (none can be downloaded here), so these tests save a randomly initialised
GFPGANv1Clean state dict as ``{'params_ema': ...}`` in a temporary GFPGANv1.4.pth. The arithmetic is the
real model's; the restored faces are not meaningful pictures. Face detection is real (MTCNN's shipped
weights), and so is the Real-ESRGAN background.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from bus.settings import NatsSettings, S3Settings, TaskSettings
from enhancer.engines import EngineError, EnhanceOptions, available_engines
from enhancer.engines.base import no_progress
from enhancer.engines.faces import (
    FACE_SIZE,
    RETINAFACE_WEIGHTS,
    MTCNNDetector,
    RetinaFaceDetector,
    alignment,
    make_detector,
    paste_faces,
    select_faces,
)
from enhancer.engines.gfpgan import GFPGANEngine, gfpgan_arch
from enhancer.engines.realesrgan import RealESRGANEngine
from enhancer.settings import EnhancerSettings
from enhancer.worker import Worker

from .photos import Recorder, shrink, until

FAST = EnhanceOptions(quality="fast", tile_size=0)


def two_faces() -> np.ndarray:
    """The astronaut (256² copy) beside her mirror image: a real photo with two faces, 256x384."""
    half = shrink(skimage.data.astronaut(), 256, 256)[:, 32:224]
    return np.ascontiguousarray(np.concatenate([half, half[:, ::-1]], axis=1))


@pytest.fixture(scope="module")
def gfpgan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("gfpgan")
    torch.manual_seed(0)
    torch.save({"params_ema": gfpgan_arch().state_dict()}, model_dir / "GFPGANv1.4.pth")
    return model_dir


@pytest.fixture(scope="module")
def gfpgan(gfpgan_dir: Path, sr_engine: RealESRGANEngine) -> GFPGANEngine:
    return GFPGANEngine(gfpgan_dir, "cpu", background=sr_engine, face_batch=2)


def test_mtcnn_landmarks_are_in_retinaface_order() -> None:
    [face] = MTCNNDetector(torch.device("cpu")).detect(skimage.data.astronaut())
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert mouth_left[0] < mouth_right[0]
    assert 0.99 < face.score <= 1


def test_restores_faces_and_pastes_them_into_the_background(
    gfpgan: GFPGANEngine, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """Both faces restored in batches of 2 — and an injected OOM on that batch forces batches of 1."""
    photo = two_faces()
    gfpgan.restorer.simulate_oom_batch_above = 1
    try:
        with caplog.at_level(logging.WARNING):
            result = gfpgan.enhance(photo, FAST, recorder)
    finally:
        gfpgan.restorer.simulate_oom_batch_above = None
    assert "retrying with batches of 1" in caplog.text

    assert result.image.shape == (1024, 1536, 3)
    assert (result.faces, result.engine, result.model) == (2, "gfpgan", "GFPGANv1.4+realesr-animevideov3")
    assert [s for s, _, _ in recorder.events] == ["faces_detected", "restoring", "restoring", "upscaling"]
    assert recorder.stage("faces_detected") == [(2, 2)]
    assert recorder.stage("restoring") == [(1, 2), (2, 2)]

    background = gfpgan.background.enhance(photo, FAST, lambda *a: None).image
    changed = np.any(result.image != background, axis=2)
    # Where each aligned 512² crop lands in the 4x output: nothing may change outside these footprints.
    footprint = np.zeros(changed.shape, np.uint8)
    faces = select_faces(gfpgan.detector.detect(photo))
    assert len(faces) == 2
    for face in faces:
        inv = cv2.invertAffineTransform(alignment(face)) * 4
        inv[:, 2] += 2
        square = np.full((FACE_SIZE, FACE_SIZE), 255, np.uint8)
        footprint |= cv2.warpAffine(square, inv, (1536, 1024)) > 0
        x1, y1, x2, y2 = (face.box * 4).astype(int)
        face_diff = np.abs(result.image[y1:y2, x1:x2].astype(int) - background[y1:y2, x1:x2]).mean()
        assert face_diff > 10, "the face region was not replaced by GFPGAN's output"
    assert not (changed & ~footprint.astype(bool)).any()
    assert (~changed).mean() > 0.5  # far from the faces the output is exactly the background's


def test_out_of_memory_for_a_single_face_fails_clearly(gfpgan: GFPGANEngine, recorder: Recorder) -> None:
    gfpgan.restorer.simulate_oom_batch_above = 0
    try:
        with pytest.raises(EngineError, match="Not enough GPU memory to restore the faces"):
            gfpgan.enhance(two_faces(), FAST, recorder)
    finally:
        gfpgan.restorer.simulate_oom_batch_above = None
    assert recorder.stage("restoring") == []  # never handed back an unrestored face


def test_photo_without_faces_is_just_upscaled(gfpgan: GFPGANEngine, recorder: Recorder) -> None:
    photo = shrink(skimage.data.coffee(), 96, 64)
    result = gfpgan.enhance(photo, FAST, recorder)
    assert result.faces == 0
    assert recorder.stage("faces_detected") == [(0, 0)]
    assert np.array_equal(result.image, gfpgan.background.enhance(photo, FAST, lambda *a: None).image)


def test_a_photo_too_small_for_any_face_is_just_upscaled(gfpgan: GFPGANEngine, recorder: Recorder) -> None:
    """Smaller than the smallest face MTCNN looks for (20 px): it used to raise from inside MTCNN."""
    photo = shrink(skimage.data.astronaut(), 16, 12)
    result = gfpgan.enhance(photo, FAST, recorder)
    assert result.faces == 0 and result.image.shape[:2] == (12 * 4, 16 * 4)


def test_garbage_detections_are_bounded(tmp_path: Path, gfpgan_dir: Path) -> None:
    """RetinaFace with random weights reports hundreds of 'faces'; at most max_faces are ever restored."""
    from enhancer.engines import _compat

    _compat.install()
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(0)
    torch.save(RetinaFace("resnet50", device=torch.device("cpu")).state_dict(), tmp_path / RETINAFACE_WEIGHTS)
    detector = make_detector(tmp_path, torch.device("cpu"))
    assert isinstance(detector, RetinaFaceDetector)
    found = detector.detect(shrink(skimage.data.astronaut(), 256, 256))
    kept = select_faces(found, max_faces=10, min_size=0)
    assert len(found) > 10
    assert len(kept) == 10
    assert [f.area for f in kept] == sorted((f.area for f in kept), reverse=True)
    assert available_engines(gfpgan_dir) == ["realesrgan", "gfpgan"]


def aligned_crops(engine: GFPGANEngine, photo: np.ndarray) -> list[np.ndarray]:
    from enhancer.engines.faces import warp_face

    return [warp_face(photo, alignment(f)) for f in select_faces(engine.detector.detect(photo))]


@pytest.fixture(scope="module")
def one_pass(gfpgan_dir: Path, sr_engine: RealESRGANEngine) -> GFPGANEngine:
    """As the service builds it: default face_batch (every face in one pass) and half (off on CPU)."""
    return GFPGANEngine(gfpgan_dir, "cpu", background=sr_engine, max_faces=10)


class Gated(torch.nn.Module):
    """The real network, except its first pass: that one waits for ``release`` and computes nothing (its photo
    only keeps the restorer busy while others line up)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.release, self.passes = net, threading.Event(), []

    def forward(self, x: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor, ...]:
        self.passes.append(x.shape[0])
        if len(self.passes) == 1:
            assert self.release.wait(60)
            return (torch.zeros_like(x),)
        return self.net(x, **kwargs)


def test_the_faces_of_photos_held_at_once_go_through_one_pass_as_they_would_alone(
        one_pass: GFPGANEngine, one_face: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    """Two photos' faces handed in while a pass runs share the next GFPGAN pass, and each photo gets back its own
    face as a pass of its own would restore it (to within one level of 255: convolutions sum in another order
    for a batch of two)."""
    restorer = one_pass.restorer
    assert (restorer.batch, restorer.half) == (10, False)  # every face of a photo in one pass; fp16 for CUDA only
    crops, expected = one_face
    other = aligned_crops(one_pass, two_faces())[1]
    net = restorer.net
    restorer.net = gated = Gated(net)
    try:
        with ThreadPoolExecutor(3) as pool:
            pool.submit(restorer.restore, [np.zeros_like(other)], no_progress)
            until(lambda: gated.passes == [1], "the first pass started")
            mine = pool.submit(restorer.restore, crops, no_progress)
            until(lambda: restorer.waiting() == 1, "the first photo waits")
            theirs = pool.submit(restorer.restore, [other], no_progress)
            until(lambda: restorer.waiting() == 2, "the second photo waits")
            gated.release.set()
            [face], [their_face] = mine.result(), theirs.result()
    finally:
        restorer.net = net
    assert gated.passes == [1, 2]
    difference = np.abs(face.astype(int) - expected[0])
    assert difference.max() <= 1 and difference.mean() < 0.01
    assert not np.array_equal(their_face, face)  # its own face (the mirror image's), not the first photo's


class Spoiled(torch.nn.Module):
    """The real network in fp32; under fp16 autocast, NaN or black (-1) instead (as a card may give).

    fp16 convolutions on CPU take minutes for this network, so the fp16 pass itself is not run here; its
    output quality is checked on a GPU by ``bench/gpu.py`` (the ``fp16 faces`` configurations).
    """

    def __init__(self, net: torch.nn.Module, value: float) -> None:
        super().__init__()
        self.net, self.value, self.half_calls = net, value, 0

    def forward(self, x: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor, ...]:
        if torch.is_autocast_enabled(x.device.type):
            self.half_calls += 1
            return (torch.full((x.shape[0], 3, FACE_SIZE, FACE_SIZE), self.value),)
        return self.net(x, **kwargs)


class Echo(torch.nn.Module):
    """Gives the faces back as they came: a network that costs nothing, where its output does not matter."""

    def forward(self, x: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor]:
        return (x,)


@pytest.fixture(scope="module")
def one_face(one_pass: GFPGANEngine) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One aligned face and its fp32 restoration, made once for the batching and fp16 tests (each pass is seconds
    on a CPU)."""
    crops = aligned_crops(one_pass, two_faces())[:1]
    expected = one_pass.restorer.forward(crops, half=False)
    assert expected is not None
    return crops, expected


@pytest.mark.parametrize("value", [float("nan"), -1.0], ids=["nan", "black"])
def test_unusable_fp16_output_is_redone_in_fp32_and_fp16_stays_off(
        one_pass: GFPGANEngine, one_face: tuple[list[np.ndarray], list[np.ndarray]], recorder: Recorder,
        value: float, caplog: pytest.LogCaptureFixture) -> None:
    crops, expected = one_face
    restorer = one_pass.restorer
    net = restorer.net
    restorer.net = spoiled = Spoiled(net, value)
    restorer.half = True
    try:
        with caplog.at_level(logging.WARNING):
            restored = restorer.restore(crops, recorder)
            # The next photo: no fp16 attempt (its fp32 pass need not be GFPGAN's seconds here: any network will do).
            spoiled.net = Echo()
            restorer.restore(crops, recorder)
    finally:
        restorer.net, half_after = net, restorer.half
        restorer.half = False
    assert "GFPGAN in fp16 gave NaN/inf or black faces" in caplog.text
    assert spoiled.half_calls == 1 and half_after is False  # tried once in fp16, then fp32 for good
    assert all(np.array_equal(a, b) for a, b in zip(restored, expected, strict=True))


# ----------------------------------------------------------------------------------------------------------
# Face-restoration strength: 0 the photo's own face, 1 the restored one, in between a blend
# ----------------------------------------------------------------------------------------------------------


def test_face_strength_blends_from_the_photos_face_to_the_restored_one(
        gfpgan: GFPGANEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the engine, on the real GFPGANv1Clean architecture: the GFPGAN pass runs once (its output is
    reused for the second strength: the same crops give the same faces), and never for strength 0."""
    photo = shrink(skimage.data.astronaut(), 160, 160)
    restore, passes, kept = gfpgan.restorer.restore, [], {}

    def restore_once(crops: list[np.ndarray], progress) -> list[np.ndarray]:
        passes.append(len(crops))
        if "faces" not in kept:
            kept["faces"] = restore(crops, progress)
        return kept["faces"]

    monkeypatch.setattr(gfpgan.restorer, "restore", restore_once)
    background = gfpgan.background.enhance(photo, FAST, lambda *a: None).image.astype(int)
    recorders = {s: Recorder() for s in (1.0, 0.5, 0.0)}
    out = {s: gfpgan.enhance(photo, replace(FAST, face_strength=s), recorders[s]) for s in recorders}
    assert passes == [1, 1]
    assert [out[s].faces for s in recorders] == [1, 1, 0]

    # 0: the original face, exactly as the photo upscaled without face restoration (nothing detected or run).
    assert np.array_equal(out[0.0].image, background)
    assert out[0.0].model == "realesr-animevideov3" and recorders[0.0].stage("restoring") == []
    # 1: the restored face replaces the photo's within the face's mask.
    full = out[1.0].image.astype(int)
    face = np.any(full != background, axis=2)
    assert face.mean() > 0.02
    full_diff = np.abs(full - background)[face].mean()
    assert full_diff > 10
    # 0.5: halfway, pixel by pixel (within the 8-bit rounding of each blend).
    half = out[0.5].image.astype(int)
    assert np.abs(half * 2 - (full + background)).max() <= 2
    assert 0.4 < np.abs(half - background)[face].mean() / full_diff < 0.6


def test_paste_at_strength_zero_leaves_the_background_exactly() -> None:
    """The blend happens where the pixels land (the mask times the strength), so 0 resamples nothing."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    affine = np.array([[8.0, 0, -256], [0, 8.0, -256]])  # the face square covers the middle of the 2x output
    assert np.array_equal(paste_faces(background.copy(), [face], [affine], 2, strength=0.0), background)
    full = paste_faces(background.copy(), [face], [affine], 2).astype(int)
    assert np.array_equal(full, paste_faces(background.copy(), [face], [affine], 2, strength=1.0))
    quarter = paste_faces(background.copy(), [face], [affine], 2, strength=0.25).astype(int)
    expected = background + (full - background) * 0.25
    assert np.abs(quarter - expected).max() <= 1.5
    assert (full != background).any()


def models_with_gfpgan(tmp_path: Path, model_dir: Path, gfpgan_dir: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    for f in [*model_dir.iterdir(), gfpgan_dir / "GFPGANv1.4.pth"]:
        if f.is_file():
            (models / f.name).symlink_to(f)
    return models


def two_slot_worker(models: Path) -> Worker:
    """A worker with Real-ESRGAN and GFPGAN on two CPU slots, not on a bus (building and warming engines asks
    nothing of it)."""
    settings = EnhancerSettings(nats=NatsSettings(), s3=S3Settings(), tasks=TaskSettings(), model_dir=models,
                                concurrency=2, compile="off").for_device("cpu")
    bus = SimpleNamespace(jetstream=lambda: None)
    return Worker(settings, bus, None, None, device="cpu", engines=["realesrgan", "gfpgan"])  # type: ignore[arg-type]


class Counted(torch.nn.Module):
    """``net``, counting the faces of each pass."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.batches = net, []

    def forward(self, x: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor]:
        self.batches.append(x.shape[0])
        return self.net(x, **kwargs)


class Broken(torch.nn.Module):
    def forward(self, x: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor]:
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")


def test_the_slots_of_a_worker_share_one_gfpgan_network(
        gfpgan_dir: Path, model_dir: Path, sr_engine: RealESRGANEngine, tmp_path: Path) -> None:
    """One copy of GFPGAN's weights per worker, whose passes its slots share; each slot keeps its own detector
    (it holds per-call state) and its own Real-ESRGAN (tiles on its own thread). ``sr_engine``: model_dir's
    Real-ESRGAN weights are converted."""
    worker = two_slot_worker(models_with_gfpgan(tmp_path, model_dir, gfpgan_dir))
    first, second = (slot.engine("gfpgan") for slot in worker._all_slots)
    assert isinstance(first, GFPGANEngine) and isinstance(second, GFPGANEngine)
    assert first.restorer is second.restorer
    assert first.background is not second.background and first.detector is not second.detector
    # Warming up runs one GFPGAN pass for the two slots before the worker may be announced (the first photo
    # with a face then finds GFPGAN's kernels ready); a network that costs nothing stands in for the pass.
    first.restorer.net = counted = Counted(Echo())
    assert asyncio.run(worker.warm_up()) == ["realesrgan", "gfpgan"]
    assert counted.batches == [1]


def test_a_gfpgan_network_that_fails_its_warm_up_is_left_out_and_let_go(
        gfpgan_dir: Path, model_dir: Path, sr_engine: RealESRGANEngine, tmp_path: Path) -> None:
    """A failure in GFPGAN's first pass (on a GPU: out of memory, a broken kernel) shows at start-up, not in a
    user's first portrait: the worker offers upscaling only and no longer holds the network."""
    worker = two_slot_worker(models_with_gfpgan(tmp_path, model_dir, gfpgan_dir))
    restorer = worker._all_slots[0].engine("gfpgan").restorer  # type: ignore[attr-defined]
    restorer.net = Broken()
    assert asyncio.run(worker.warm_up()) == ["realesrgan"]
    assert worker.capabilities == ["upscale"]
    assert worker._shared.get("gfpgan", lambda: None) is None  # the shared network was let go
