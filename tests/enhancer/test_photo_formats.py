"""Photos as phones and cameras make them, in every input format, written in every output format: upright
(EXIF orientation applied, never left to rotate again), the colours a person saw (Display P3 profile kept),
transparency kept where the format holds it, and no GPS position, serial number or maker notes left.

The files are made here the way cameras make them (``tests/support/camera.py``), except HEIC, which pi-heif
cannot write: two real files from pi-heif's test images are in ``tests/data/heic`` (see its README).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from enhancer.imaging import decode, encode

from ..support import encode as save
from ..support import photo
from ..support.camera import (
    IPHONE_HEIC,
    RGBA_HEIF,
    as_p3,
    camera_exif,
    colourful,
    display_p3,
    identifying_metadata,
    patch_centres,
    seen,
)

LIMIT = 20_000_000
SIZE = (60, 40)
PICTURE = colourful(SIZE)
#: Orientation 6 means "rotate 90° clockwise to display": what the person saw on the phone.
UPRIGHT = PICTURE.transpose(Image.Transpose.ROTATE_270)
OUTPUTS = {"jpeg": ("JPEG", "image/jpeg", "jpg"), "png": ("PNG", "image/png", "png"),
           "webp": ("WEBP", "image/webp", "webp"), "avif": ("AVIF", "image/avif", "avif")}


def multi_picture(first: Image.Image, **params: object) -> bytes:
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[Image.new("RGB", first.size, (0, 0, 255))], **params)
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    return buf.getvalue()


def camera_file(kind: str) -> bytes:
    """PICTURE as stored by a camera (sideways, with orientation 6), with GPS, serial, maker notes and P3."""
    meta = {"exif": camera_exif(6), "icc_profile": display_p3()}
    if kind == "multi-picture JPEG":
        return multi_picture(PICTURE, quality=95, **meta)
    fmt, params = INPUTS[kind]
    return save(PICTURE, fmt, **params, **meta)


INPUTS: dict[str, tuple[str, dict[str, object]]] = {
    "baseline JPEG": ("JPEG", {"quality": 95}),
    "progressive JPEG": ("JPEG", {"quality": 95, "progressive": True}),
    "multi-picture JPEG": ("MPO", {}),
    "PNG": ("PNG", {}),
    "WebP": ("WEBP", {"quality": 95}),
    "AVIF": ("AVIF", {"quality": 95}),
    "TIFF": ("TIFF", {}),
}


def assert_looks_like(out: Image.Image, expected_seen: np.ndarray, *, mean: float, patch: int) -> None:
    """``out`` as a colour-managed viewer shows it is ``expected_seen``, on average and on the colour patches."""
    shown = seen(out)
    assert shown.shape == expected_seen.shape
    diff = np.abs(shown - expected_seen)
    assert diff.mean() < mean, diff.mean()
    for x, y in _upright_centres():
        assert diff[y, x].max() <= patch, (x, y, shown[y, x], expected_seen[y, x])


def _upright_centres() -> list[tuple[int, int]]:
    """The patch centres of PICTURE once rotated upright (90° clockwise): (x, y) → (H-1-y, x)."""
    return [(SIZE[1] - 1 - y, x) for x, y in patch_centres(SIZE)]


@pytest.mark.parametrize("output_format", ["auto", *OUTPUTS])
@pytest.mark.parametrize("kind", list(INPUTS))
def test_a_camera_photo_comes_out_upright_in_its_colours_without_identifying_metadata(kind: str,
                                                                                     output_format: str) -> None:
    data = camera_file(kind)
    assert identifying_metadata(data)  # the upload carries all of it
    decoded = decode(data, max_pixels=LIMIT)
    assert decoded.size == UPRIGHT.size == (40, 60)
    assert decoded.icc == display_p3()

    body, ctype, ext = encode(decoded.rgb, decoded.alpha, decoded.icc, decoded.source_format,
                              output_format=output_format, quality=95)
    chosen = output_format if output_format != "auto" else ("png" if kind == "PNG" else "jpeg")
    assert (ctype, ext) == OUTPUTS[chosen][1:]
    out = Image.open(io.BytesIO(body))
    assert out.format == OUTPUTS[chosen][0] and out.size == (40, 60)  # upright, and not rotated again by a tag
    assert identifying_metadata(body) == []
    assert "exif" not in out.info or not out.getexif()
    assert out.info.get("icc_profile") == display_p3()
    assert_looks_like(out, as_p3(UPRIGHT), mean=8, patch=10)


def test_the_colour_check_sees_a_lost_profile() -> None:
    """The check above would fail if the profile were dropped: the patches look 20+ levels off as sRGB."""
    decoded = decode(camera_file("PNG"), max_pixels=LIMIT)
    body, _, _ = encode(decoded.rgb, None, None, "PNG")  # the profile left out
    with pytest.raises(AssertionError):
        assert_looks_like(Image.open(io.BytesIO(body)), as_p3(UPRIGHT), mean=8, patch=10)


def test_an_iphone_heic_is_read_with_its_profile_and_written_without_its_gps() -> None:
    data = IPHONE_HEIC.read_bytes()
    assert "GPS" in identifying_metadata(data) and "camera make/model" in identifying_metadata(data)
    decoded = decode(data, max_pixels=LIMIT)
    assert decoded.source_format == "HEIF" and decoded.size == (1025, 900) and decoded.alpha is None
    assert decoded.icc == display_p3()
    assert decoded.rgb.std() > 20  # a real picture, not a blank

    for output_format in ("auto", "jpeg", "webp"):
        body, ctype, _ = encode(decoded.rgb, None, decoded.icc, decoded.source_format, output_format=output_format)
        assert ctype == ("image/webp" if output_format == "webp" else "image/jpeg")
        out = Image.open(io.BytesIO(body))
        assert out.size == (1025, 900) and out.info.get("icc_profile") == display_p3()
        assert identifying_metadata(body) == []
        assert np.abs(np.asarray(out.convert("RGB"), np.int16) - decoded.rgb).mean() < 3


@pytest.mark.parametrize("output_format", ["auto", "png", "webp", "avif"])
def test_a_heif_with_transparency_keeps_it(output_format: str) -> None:
    decoded = decode(RGBA_HEIF.read_bytes(), max_pixels=LIMIT)
    assert decoded.source_format == "HEIF" and decoded.size == (29, 100)
    assert decoded.alpha is not None and decoded.alpha.min() < 10 and decoded.alpha.max() > 240
    body, ctype, _ = encode(decoded.rgb, decoded.alpha, decoded.icc, decoded.source_format,
                            output_format=output_format, quality=100)
    assert ctype == f"image/{'png' if output_format == 'auto' else output_format}"
    out = Image.open(io.BytesIO(body))
    assert out.mode == "RGBA"
    assert np.abs(np.asarray(out.getchannel("A"), np.int16) - decoded.alpha).mean() < 3


def test_jpeg_chosen_for_a_transparent_photo_shows_it_over_white() -> None:
    alpha = np.zeros((40, 60), np.uint8)
    alpha[:, 30:] = 255  # left half transparent
    rgba = np.dstack([np.asarray(photo("coffee", size=SIZE)), alpha])
    decoded = decode(save(Image.fromarray(rgba, "RGBA"), "PNG"), max_pixels=LIMIT)
    body, ctype, ext = encode(decoded.rgb, decoded.alpha, None, "PNG", output_format="jpeg", quality=95)
    assert (ctype, ext) == ("image/jpeg", "jpg")
    out = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), np.int16)
    assert out[:, :26].min() > 245  # transparent: white, not whatever colour hid under it
    assert np.abs(out[:, 34:] - rgba[:, 34:, :3]).mean() < 5


def png_kinds() -> dict[str, tuple[bytes, np.ndarray, np.ndarray | None]]:
    """PNGs as different programs write them: (file, expected RGB, expected alpha)."""
    rgb = np.asarray(photo("chelsea", size=SIZE))
    grey = np.asarray(photo("chelsea", size=SIZE).convert("L"))
    deep = (grey.astype(np.uint16) * 257)
    pal = photo("chelsea", size=SIZE).quantize(32)
    pal_rgb = np.asarray(pal.convert("RGB"))
    transparent_index = int(np.asarray(pal)[0, 0])
    pal_alpha = np.where(np.asarray(pal) == transparent_index, 0, 255).astype(np.uint8)
    la_alpha = np.tile(np.linspace(0, 255, SIZE[0]).astype(np.uint8), (SIZE[1], 1))
    return {
        "16-bit grey (I;16)": (save(Image.fromarray(deep), "PNG"), np.dstack([grey] * 3), None),
        "8-bit grey": (save(Image.fromarray(grey, "L"), "PNG"), np.dstack([grey] * 3), None),
        "grey + alpha": (save(Image.fromarray(np.dstack([grey, la_alpha]), "LA"), "PNG"), np.dstack([grey] * 3),
                         la_alpha),
        "palette with transparency": (save(pal, "PNG", transparency=transparent_index), pal_rgb, pal_alpha),
        "8-bit RGB": (save(Image.fromarray(rgb), "PNG"), rgb, None),
    }


@pytest.mark.parametrize("output_format", ["auto", "png", "webp", "avif"])
@pytest.mark.parametrize("kind", list(png_kinds()))
def test_png_kinds_keep_their_pixels_and_transparency(kind: str, output_format: str) -> None:
    data, rgb, alpha = png_kinds()[kind]
    decoded = decode(data, max_pixels=LIMIT)
    assert np.abs(decoded.rgb.astype(int) - rgb).max() <= 1
    if alpha is None:
        assert decoded.alpha is None
    else:
        assert np.array_equal(decoded.alpha, alpha)
    body, _, _ = encode(decoded.rgb, decoded.alpha, decoded.icc, decoded.source_format,
                        output_format=output_format, quality=100)
    out = Image.open(io.BytesIO(body))
    lossless = output_format in ("auto", "png")
    assert out.mode == ("RGBA" if alpha is not None else "RGB")
    shown = np.asarray(out.convert("RGB"), np.int16)
    opaque = alpha is None or alpha > 0
    assert np.abs(shown - rgb)[opaque].mean() < (0.01 if lossless else 4)
    if alpha is not None:
        assert np.abs(np.asarray(out.getchannel("A"), np.int16) - alpha).max() <= (0 if lossless else 8)


@pytest.mark.parametrize("output_format", ["auto", "webp"])
def test_cmyk_and_greyscale_jpegs_keep_their_colours(output_format: str) -> None:
    rgb = np.asarray(photo("coffee", size=SIZE), np.int16)
    cmyk = decode(save(photo("coffee", size=SIZE).convert("CMYK"), "JPEG", quality=95), max_pixels=LIMIT)
    grey = decode(save(photo("coffee", size=SIZE).convert("L"), "JPEG", quality=95), max_pixels=LIMIT)
    for decoded, expected in ((cmyk, rgb), (grey, np.asarray(photo("coffee", size=SIZE).convert("L").convert("RGB"),
                                                                np.int16))):
        body, _, _ = encode(decoded.rgb, None, decoded.icc, decoded.source_format, output_format=output_format,
                            quality=95)
        out = Image.open(io.BytesIO(body))
        assert out.mode == "RGB" and "icc_profile" not in out.info  # CMYK was made sRGB: no CMYK profile on RGB
        assert np.abs(np.asarray(out, np.int16) - expected).mean() < 7


@pytest.mark.parametrize("output_format", ["jpeg", "webp", "avif"])
def test_output_quality_is_applied(output_format: str) -> None:
    rgb = np.asarray(photo("astronaut", size=(128, 128)))
    low, high = (len(encode(rgb, None, None, "JPEG", output_format=output_format, quality=q)[0]) for q in (30, 95))
    assert low < 0.6 * high, (low, high)


def test_png_output_is_lossless_whatever_the_quality() -> None:
    rgb = np.asarray(photo("astronaut", size=(64, 64)))
    body, _, _ = encode(rgb, None, None, "JPEG", output_format="png", quality=1)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), rgb)


def test_a_damaged_rgb_profile_is_dropped_not_embedded() -> None:
    bogus = bytes(16) + b"RGB " + bytes(200)  # says RGB in its header, parses as nothing
    decoded = decode(save(photo(size=SIZE), "JPEG", icc_profile=bogus), max_pixels=LIMIT)
    assert decoded.icc is None
    body, _, _ = encode(decoded.rgb, None, decoded.icc, decoded.source_format)
    assert "icc_profile" not in Image.open(io.BytesIO(body)).info
