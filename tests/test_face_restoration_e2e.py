"""Face restoration through the whole service: upload → enhancer's GFPGAN engine → download.

CI has no GFPGAN weights (none can be downloaded here), so the enhancer of this module's stack loads a
randomly initialised GFPGANv1Clean saved as ``{'params_ema': ...}`` in its model directory, exactly where
``photoenhance models fetch`` puts the real GFPGANv1.4.pth. The arithmetic is the real model's; the
restored faces are noise, which makes them easy to tell from the background. Detection (MTCNN) and the
Real-ESRGAN background are real.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from enhancer.engines.gfpgan import WEIGHTS_FILE, gfpgan_arch

from .support import encode, finish, photo, private_stack, submit


@pytest.fixture(scope="module")
def face_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Edge + one enhancer whose model directory holds GFPGAN weights (random, see the module docstring)."""
    root: Path = tmp_path_factory.mktemp("faces")
    models = root / "models"
    models.mkdir()
    torch.manual_seed(0)
    torch.save({"params_ema": gfpgan_arch().state_dict()}, models / WEIGHTS_FILE)
    with private_stack(root, models, "face-worker") as stack, \
            httpx.Client(base_url=stack.url, timeout=30) as client:
        yield client


def enhanced(http: httpx.Client, data: bytes, face_enhance: str, **extra: str) -> tuple[dict, np.ndarray]:
    task_id = submit(http, data, "portrait.jpg", scale="4", quality_level="fast", tile_size="0",
                     face_enhance=face_enhance, **extra)
    status = finish(http, task_id)
    assert status["status"] == "completed", status
    r = http.get(f"/api/v1/download/{task_id}")
    assert r.status_code == 200
    return status, np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.int16)


def test_the_service_says_it_can_restore_faces(face_http: httpx.Client) -> None:
    info = face_http.get("/api/v1/info").json()
    assert info["features"]["face_restoration"] is True
    assert any("gfpgan" in e["engines"] for e in info["enhancers"])


def test_a_portrait_comes_back_with_its_face_restored_and_the_rest_untouched(face_http: httpx.Client) -> None:
    """The face is replaced by GFPGAN's output; away from it the picture is the plain upscale's, pixel for pixel."""
    data = encode(photo("astronaut", size=(160, 160)), quality=95)
    restored_status, restored = enhanced(face_http, data, "true", face_strength="1")  # fully restored
    plain_status, plain = enhanced(face_http, data, "false")

    assert restored_status["output"]["faces"] == 1 and restored_status["options"]["face_strength"] == 1
    assert restored_status["output"]["engine"] == "gfpgan:GFPGANv1.4+realesr-animevideov3"
    assert plain_status["output"]["faces"] in (0, None)
    assert plain_status["output"]["engine"].startswith("realesrgan:")
    assert restored.shape == plain.shape == (640, 640, 3)
    # The astronaut's face sits around (280, 150) of the 640² output; random weights paint noise there.
    face = (slice(110, 190), slice(240, 320))
    assert np.abs(restored[face] - plain[face]).mean() > 20
    # The bottom-left corner is far from the face's pasted square: identical pixels, identical JPEG blocks.
    corner = (slice(576, 640), slice(0, 64))
    assert np.array_equal(restored[corner], plain[corner])


def test_a_photo_without_faces_is_upscaled_and_reports_none(face_http: httpx.Client) -> None:
    status, image = enhanced(face_http, encode(photo("coffee", size=(160, 120)), quality=95), "true")
    assert status["output"]["faces"] == 0
    assert image.shape == (480, 640, 3)
