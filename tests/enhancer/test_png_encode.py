"""The PNG writer (``enhancer.imaging.encode_png``): the same pixels, profile and transparency as Pillow would
write, in a file no larger, with nothing else of the upload's metadata. In-process, on real photos."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageCms

from enhancer import imaging
from enhancer.imaging import encode, encode_png

#: A photo-like result: scikit-image's astronaut upscaled ×2, as an enhanced photo is smooth at the pixel level.
RESULT = cv2.resize(skimage.data.astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def chunks(png: bytes) -> list[bytes]:
    """The chunk types of ``png``, in order, each one's CRC checked."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    kinds, at = [], 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at:at + 4])
        kind, data = png[at + 4:at + 8], png[at + 8:at + 8 + length]
        assert struct.unpack(">I", png[at + 8 + length:at + 12 + length])[0] == zlib.crc32(kind + data), kind
        kinds.append(kind)
        at += 12 + length
    return kinds


def pillow_png(pixels: np.ndarray, icc: bytes | None = None) -> bytes:
    """What the enhancer wrote before: Pillow at level 6."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=6, **({"icc_profile": icc} if icc else {}))
    return buf.getvalue()


def assert_same_pixels(png: bytes, pixels: np.ndarray) -> None:
    """Pillow and libpng (through OpenCV) both read back exactly ``pixels``."""
    img = Image.open(io.BytesIO(png))
    assert img.mode == ("RGBA" if pixels.shape[2] == 4 else "RGB")
    assert np.array_equal(np.asarray(img), pixels)
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    order = [2, 1, 0, 3][: pixels.shape[2]]
    assert np.array_equal(bgr[..., order], pixels)


@pytest.fixture(params=["zlib-ng", "zlib"])
def deflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each deflate the writer can run on: zlib-ng (installed), or Python's zlib (a checkout without it)."""
    if request.param == "zlib":
        monkeypatch.setattr(imaging, "_deflate", zlib)
        monkeypatch.setattr(imaging, "PNG_LEVEL", 6)
    else:
        assert imaging._deflate is not zlib, "zlib-ng is a dependency (pyproject.toml): reinstall"
    return request.param


def test_a_photo_keeps_its_pixels_and_profile_in_a_file_no_larger_than_pillows(deflater: str) -> None:
    icc = srgb_icc()
    body = encode_png(RESULT, icc)
    assert_same_pixels(body, RESULT)
    assert Image.open(io.BytesIO(body)).info["icc_profile"] == icc
    assert chunks(body)[:2] == [b"IHDR", b"iCCP"] and chunks(body)[-1] == b"IEND"
    assert set(chunks(body)) == {b"IHDR", b"iCCP", b"IDAT", b"IEND"}  # no EXIF, text or anything else
    # Split into bands on threads, yet as small as Pillow's own single stream (measured: 0.987× with zlib-ng,
    # 1.000× with zlib).
    assert len(body) <= 1.01 * len(pillow_png(RESULT, icc)), (deflater, len(body), len(pillow_png(RESULT, icc)))


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 300, 4), (300, 1, 3), (97, 61, 4), (250, 173, 3)])
def test_odd_sizes_and_many_small_bands_read_back_exactly(shape: tuple[int, int, int], deflater: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands of a few rows each (forced), so that every band boundary, primed dictionary and the last band's
    finish are exercised; sizes that leave no band full."""
    monkeypatch.setattr(imaging, "_MIN_BAND", 1)
    monkeypatch.setattr(imaging, "_png_threads", lambda: 16)  # 64 bands where there are rows enough
    h, w, c = shape
    pixels = cv2.resize(skimage.data.chelsea(), (w, h), interpolation=cv2.INTER_AREA)
    if c == 4:
        pixels = np.dstack([pixels, np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))])
    assert_same_pixels(encode_png(np.ascontiguousarray(pixels)), pixels)


def test_encode_writes_alpha_and_profile_through_the_new_writer() -> None:
    icc = srgb_icc()
    alpha = np.tile(np.linspace(0, 255, RESULT.shape[1]).astype(np.uint8), (RESULT.shape[0], 1))
    body, ctype, ext = encode(RESULT, alpha, icc, "PNG")
    assert (ctype, ext) == ("image/png", "png")
    assert_same_pixels(body, np.dstack([RESULT, alpha]))
    assert Image.open(io.BytesIO(body)).info["icc_profile"] == icc
    body, _, _ = encode(RESULT[:40, :60], None, None, "PNG")
    assert chunks(body) == [b"IHDR", b"IDAT", b"IEND"]


def test_what_it_cannot_write_is_refused() -> None:
    for bad in (RESULT.astype(np.uint16), RESULT[..., 0], RESULT[..., :2], RESULT[:0]):
        with pytest.raises(ValueError, match="expected HxWx3 or HxWx4 uint8"):
            encode_png(bad)
