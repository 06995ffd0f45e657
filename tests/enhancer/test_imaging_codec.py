"""Upload decoding and result encoding: orientation, alpha, ICC, bit depths, CMYK, damage, bombs, formats."""

from __future__ import annotations

import io
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageCms

from enhancer.imaging import ImageError, decode, encode, upscale_alpha

from .photos import shrink

LIMIT = 20_000_000
PHOTO = shrink(skimage.data.chelsea(), 60, 40)  # a real photo, 60 wide x 40 high


def save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_exif_orientation_is_applied_and_not_written_back() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = save(Image.fromarray(PHOTO), "JPEG", quality=95, exif=exif.tobytes())
    decoded = decode(data, max_pixels=LIMIT)
    assert decoded.rgb.shape == (60, 40, 3)  # upright: portrait now
    expected = np.rot90(PHOTO, k=-1)
    assert np.abs(decoded.rgb.astype(int) - expected).mean() < 4

    body, ctype, ext = encode(decoded.rgb, None, decoded.icc, decoded.source_format)
    assert (ctype, ext) == ("image/jpeg", "jpg")
    out = Image.open(io.BytesIO(body))
    assert out.size == (40, 60)
    assert 0x0112 not in out.getexif()


def test_png_alpha_is_kept_and_upscaled() -> None:
    alpha = np.tile(np.linspace(0, 255, 60).astype(np.uint8), (40, 1))
    data = save(Image.fromarray(np.dstack([PHOTO, alpha]), "RGBA"), "PNG")
    decoded = decode(data, max_pixels=LIMIT)
    assert decoded.source_format == "PNG" and decoded.mode == "RGBA"
    assert np.array_equal(decoded.rgb, PHOTO) and np.array_equal(decoded.alpha, alpha)

    big_alpha = upscale_alpha(decoded.alpha, (240, 160))
    assert big_alpha.shape == (160, 240)
    big = cv2.resize(decoded.rgb, (240, 160))
    body, ctype, ext = encode(big, big_alpha, decoded.icc, decoded.source_format)
    assert (ctype, ext) == ("image/png", "png")
    out = Image.open(io.BytesIO(body))
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[:, :, 3], big_alpha)


def test_opaque_alpha_is_dropped_and_palette_transparency_read() -> None:
    opaque = save(Image.fromarray(np.dstack([PHOTO, np.full((40, 60), 255, np.uint8)]), "RGBA"), "PNG")
    assert decode(opaque, max_pixels=LIMIT).alpha is None

    pal = Image.fromarray(PHOTO).quantize(16)
    pal.info["transparency"] = 0
    decoded = decode(save(pal, "PNG", transparency=0), max_pixels=LIMIT)
    assert decoded.mode == "P" and decoded.alpha is not None
    assert set(np.unique(decoded.alpha)) <= {0, 255} and (decoded.alpha == 0).any()


def test_icc_profile_is_kept() -> None:
    icc = srgb_icc()
    for fmt in ("JPEG", "PNG"):
        decoded = decode(save(Image.fromarray(PHOTO), fmt, icc_profile=icc), max_pixels=LIMIT)
        assert decoded.icc == icc
        body, _, _ = encode(decoded.rgb, None, decoded.icc, decoded.source_format)
        assert Image.open(io.BytesIO(body)).info.get("icc_profile") == icc


def test_16_bit_png_is_scaled_not_clipped() -> None:
    gray16 = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    decoded = decode(cv2.imencode(".png", gray16)[1].tobytes(), max_pixels=LIMIT)
    assert decoded.mode.startswith("I;16")
    assert decoded.rgb.shape == (8, 64, 3)
    assert np.abs(decoded.rgb[..., 0].astype(int) - gray16 / 257).max() <= 1
    assert decoded.rgb[0, 1, 0] < 10  # 1040/65535 of full scale, not clipped to white

    rgb16 = (PHOTO.astype(np.uint16) * 257)[:, :, ::-1]  # cv2 writes BGR
    decoded = decode(cv2.imencode(".png", np.ascontiguousarray(rgb16))[1].tobytes(), max_pixels=LIMIT)
    assert np.abs(decoded.rgb.astype(int) - PHOTO).max() <= 1


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.fromarray(PHOTO).convert("CMYK")
    decoded = decode(save(cmyk, "JPEG", quality=95), max_pixels=LIMIT)
    assert decoded.mode == "CMYK" and decoded.rgb.shape == (40, 60, 3)
    assert np.abs(decoded.rgb.astype(int) - PHOTO).mean() < 6
    assert decoded.icc is None  # a CMYK profile would be wrong for the RGB result


def test_grayscale_jpeg_becomes_rgb() -> None:
    gray = Image.fromarray(PHOTO).convert("L")
    decoded = decode(save(gray, "JPEG"), max_pixels=LIMIT)
    assert decoded.rgb.shape == (40, 60, 3)
    assert np.array_equal(decoded.rgb[..., 0], decoded.rgb[..., 2])


def test_truncated_jpeg_is_reported_as_damaged() -> None:
    data = save(Image.fromarray(shrink(skimage.data.astronaut(), 256, 256)), "JPEG", quality=95)
    with pytest.raises(ImageError, match="damaged or incomplete"):
        decode(data[: len(data) // 2], max_pixels=LIMIT)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image: decoding it would need gigabytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\0" * 64)

    def crc(c: bytes) -> bytes:
        return struct.pack(">I", zlib.crc32(c))

    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + crc(chunk)
            + struct.pack(">I", len(idat) - 4) + idat + crc(idat) + struct.pack(">I", 0) + b"IEND" + crc(b"IEND"))


@pytest.mark.parametrize(("size", "message"), [
    (6000, r"The image is 6000×6000 pixels \(36 megapixels\); the limit is 20 megapixels\."),
    (30000, r"The image is too large \(900 megapixels\); the limit is 20 megapixels\."),
])
def test_pixel_bomb_is_refused_before_decoding(size: int, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ImageError, match=message):
        decode(_png_claiming(size, size), max_pixels=LIMIT)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("fmt", ["WEBP", "AVIF"])
def test_webp_and_avif_decode_and_come_back_as_jpeg(fmt: str) -> None:
    decoded = decode(save(Image.fromarray(PHOTO), fmt, quality=90), max_pixels=LIMIT)
    assert decoded.source_format == fmt
    assert decoded.rgb.shape == (40, 60, 3)
    assert np.abs(decoded.rgb.astype(int) - PHOTO).mean() < 8
    _, ctype, ext = encode(decoded.rgb, None, None, decoded.source_format)
    assert (ctype, ext) == ("image/jpeg", "jpg")


def test_bmp_and_tiff_decode() -> None:
    for fmt in ("BMP", "TIFF"):
        decoded = decode(save(Image.fromarray(PHOTO), fmt), max_pixels=LIMIT)
        assert decoded.source_format == fmt and np.array_equal(decoded.rgb, PHOTO)


def test_unsupported_and_non_images_are_refused() -> None:
    with pytest.raises(ImageError, match="GIF images are not supported; please upload JPEG, PNG, WebP, AVIF"):
        decode(save(Image.fromarray(PHOTO), "GIF"), max_pixels=LIMIT)
    for junk in (b"", b"hello, not an image", b"\x89PNG\r\n\x1a\n"):
        with pytest.raises(ImageError):
            decode(junk, max_pixels=LIMIT)
