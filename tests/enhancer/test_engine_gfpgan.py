"""GFPGAN engine: detect → align → restore → paste back, on the real GFPGANv1Clean architecture.

CI has no GFPGAN weights (none can be downloaded here), so these tests save a randomly initialised
GFPGANv1Clean state dict as ``{'params_ema': ...}`` in a temporary GFPGANv1.4.pth. The arithmetic is the
real model's; the restored faces are not meaningful pictures. Face detection is real (MTCNN's shipped
weights), and so is the Real-ESRGAN background.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from enhancer.engines import EngineError, EnhanceOptions, available_engines
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

from .photos import Recorder, shrink

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
    gfpgan.simulate_oom_batch_above = 1
    try:
        with caplog.at_level(logging.WARNING):
            result = gfpgan.enhance(photo, FAST, recorder)
    finally:
        gfpgan.simulate_oom_batch_above = None
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
    gfpgan.simulate_oom_batch_above = 0
    try:
        with pytest.raises(EngineError, match="Not enough GPU memory to restore the faces"):
            gfpgan.enhance(two_faces(), FAST, recorder)
    finally:
        gfpgan.simulate_oom_batch_above = None
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


def test_all_faces_of_a_photo_go_through_one_forward_pass(one_pass: GFPGANEngine, recorder: Recorder) -> None:
    assert (one_pass.face_batch, one_pass.half) == (10, False)  # fp16 is for CUDA only by default
    batches: list[int] = []
    hook = one_pass._net.register_forward_hook(lambda _m, args, _out: batches.append(args[0].shape[0]))
    try:
        result = one_pass.enhance(two_faces(), FAST, recorder)
    finally:
        hook.remove()
    assert result.faces == 2 and batches == [2]


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


@pytest.fixture(scope="module")
def one_face(one_pass: GFPGANEngine) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One aligned face and its fp32 restoration, made once for the fp16 tests (each pass is seconds on a CPU)."""
    crops = aligned_crops(one_pass, two_faces())[:1]
    expected = one_pass._forward(crops, half=False)
    assert expected is not None
    return crops, expected


@pytest.mark.parametrize("value", [float("nan"), -1.0], ids=["nan", "black"])
def test_unusable_fp16_output_is_redone_in_fp32_and_fp16_stays_off(
        one_pass: GFPGANEngine, one_face: tuple[list[np.ndarray], list[np.ndarray]], recorder: Recorder,
        value: float, caplog: pytest.LogCaptureFixture) -> None:
    crops, expected = one_face
    net = one_pass._net
    one_pass._net = spoiled = Spoiled(net, value)
    one_pass.half = True
    try:
        with caplog.at_level(logging.WARNING):
            restored = one_pass.restore(crops, recorder)
            again = one_pass.restore(crops, recorder)
    finally:
        one_pass._net, one_pass_half = net, one_pass.half
        one_pass.half = False
    assert "GFPGAN in fp16 gave NaN/inf or black faces" in caplog.text
    assert spoiled.half_calls == 1 and one_pass_half is False  # tried once in fp16, then fp32 for good
    for got in (restored, again):
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


# ----------------------------------------------------------------------------------------------------------
# Face-restoration strength: 0 the photo's own face, 1 the restored one, in between a blend
# ----------------------------------------------------------------------------------------------------------


def test_face_strength_blends_from_the_photos_face_to_the_restored_one(
        gfpgan: GFPGANEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the engine, on the real GFPGANv1Clean architecture: the GFPGAN pass runs once (its output is
    reused for the second strength: the same crops give the same faces), and never for strength 0."""
    photo = shrink(skimage.data.astronaut(), 160, 160)
    restore, passes, kept = gfpgan.restore, [], {}

    def restore_once(crops: list[np.ndarray], progress) -> list[np.ndarray]:
        passes.append(len(crops))
        if "faces" not in kept:
            kept["faces"] = restore(crops, progress)
        return kept["faces"]

    monkeypatch.setattr(gfpgan, "restore", restore_once)
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
