"""Decode uploads into what the engines take (HxWx3 uint8 RGB + optional alpha) and encode the results.

Engines only ever see 8-bit RGB; everything format-specific (EXIF orientation, palettes, CMYK, 16-bit,
alpha, ICC profiles, decompression bombs, damaged files) is handled here, with errors a person understands.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

with contextlib.suppress(ImportError):  # rav1e/SVT AVIF codecs; Pillow ≥ 11.3 also reads AVIF natively
    import pillow_avif  # noqa: F401

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "BMP", "TIFF")
_FORMAT_ALIASES = {"MPO": "JPEG"}  # phone cameras write multi-picture JPEGs; Pillow calls them MPO
_SUPPORTED_TEXT = "JPEG, PNG, WebP, AVIF, BMP or TIFF"
JPEG_QUALITY = 95


class ImageError(ValueError):
    """The upload cannot be used; ``str()`` is a sentence to show the user."""


@dataclass
class Decoded:
    """A decoded upload: ``rgb`` HxWx3 uint8, ``alpha`` HxW uint8 (None when absent or fully opaque)."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    icc: bytes | None
    source_format: str
    mode: str  # the file's own Pillow mode, e.g. "RGB", "P", "CMYK", "I;16"

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.rgb.shape[1], self.rgb.shape[0]


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.3g}"


def decode(data: bytes, *, max_pixels: int) -> Decoded:
    """Decode ``data``; the pixel limit is checked from the header before any pixel data is decoded."""
    img = _open(data, max_pixels)
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(
            f"The image is {w}×{h} pixels ({_megapixels(w * h)} megapixels); "
            f"the limit is {_megapixels(max_pixels)} megapixels."
        )
    fmt = _FORMAT_ALIASES.get(img.format or "", img.format or "")
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError(f"{fmt or 'This'} images are not supported; please upload {_SUPPORTED_TEXT}.")
    source_mode = img.mode
    try:
        img.load()
        img = _orient(img)
        rgb, alpha, icc = _to_rgb(img, img.info.get("icc_profile"))
    except ImageError:
        raise
    except Exception as exc:  # every plugin fails differently on broken data
        raise ImageError(
            "The image file is damaged or incomplete and cannot be read; please upload it again."
        ) from exc
    if alpha is not None and int(alpha.min()) == 255:
        alpha = None  # fully opaque: no need to carry it through
    return Decoded(rgb=rgb, alpha=alpha, icc=icc, source_format=fmt, mode=source_mode)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" ({_megapixels(int(m.group(1)))} megapixels)" if m else ""
        raise ImageError(f"The image is too large{size}; the limit is {_megapixels(max_pixels)} megapixels.") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"This file is not an image in a supported format; please upload {_SUPPORTED_TEXT}.") from exc
    except Exception as exc:
        raise ImageError(
            "The image file is damaged or incomplete and cannot be read; please upload it again."
        ) from exc


def _orient(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is ignored rather than failing the photo."""
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception as exc:
        log.warning("Ignoring unreadable EXIF orientation: %s", exc)
        return img


def _icc_space(icc: bytes | None) -> str | None:
    """The data colour space signature from the ICC header ('RGB ', 'GRAY', 'CMYK', ...)."""
    return icc[16:20].decode("latin-1") if icc and len(icc) >= 20 else None


def _to_rgb(img: Image.Image, icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None, bytes | None]:
    mode = img.mode
    alpha = None
    if mode == "CMYK":
        return _cmyk_to_rgb(img, icc), None, None
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_gray(img), None, None
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        img = img.convert("RGBA")
        alpha = np.asarray(img.getchannel("A"), np.uint8).copy()
    rgb = np.ascontiguousarray(np.asarray(img.convert("RGB"), np.uint8))
    # A grayscale profile on what is now RGB data would be wrong; keep only RGB profiles.
    return rgb, alpha, icc if _icc_space(icc) == "RGB " else None


def _cmyk_to_rgb(img: Image.Image, icc: bytes | None) -> np.ndarray:
    """Colour-manage CMYK through its embedded profile when there is one; otherwise Pillow's naive formula."""
    if icc and _icc_space(icc) == "CMYK":
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            img = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError) as exc:
            log.warning("CMYK profile unusable (%s); converting without it", exc)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), np.uint8))


def _high_depth_gray(img: Image.Image) -> np.ndarray:
    """16-bit (and 32-bit int/float) grayscale scaled into 8 bits, never clipped at 255."""
    arr = np.asarray(img)
    if img.mode == "F":
        top = 1.0 if float(np.nanmax(arr, initial=0)) <= 1.0 else 255.0
        g = np.clip(np.nan_to_num(arr) / top * 255.0, 0, 255)
    else:
        g = np.clip(arr.astype(np.float64), 0, 65535) / 257.0
    g8 = np.rint(g).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(g8[:, :, None], 3, axis=2))


def upscale_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxW uint8 alpha to ``size`` = (width, height) with bilinear interpolation."""
    return cv2.resize(alpha, size, interpolation=cv2.INTER_LINEAR)


def encode(
    rgb: np.ndarray, alpha: np.ndarray | None, icc: bytes | None, source_format: str
) -> tuple[bytes, str, str]:
    """Encode a result; returns (bytes, content type, file extension without the dot).

    PNG input stays PNG, as does anything with transparency (JPEG cannot hold it); everything else becomes
    JPEG at quality 95, as the original service wrote. The ICC profile is kept. No EXIF is written, so no
    orientation tag can rotate the already-upright pixels a second time.
    """
    if alpha is not None and alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha {alpha.shape} does not match image {rgb.shape[:2]}")
    extra = {"icc_profile": icc} if icc else {}
    buf = io.BytesIO()
    if source_format == "PNG" or alpha is not None:
        img = Image.fromarray(rgb, "RGB")
        if alpha is not None:
            img.putalpha(Image.fromarray(alpha, "L"))
        img.save(buf, "PNG", compress_level=6, **extra)
        return buf.getvalue(), "image/png", "png"
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=JPEG_QUALITY, **extra)
    return buf.getvalue(), "image/jpeg", "jpg"
