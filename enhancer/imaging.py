"""Decode uploads into what the engines take (HxWx3 uint8 RGB + optional alpha) and encode the results.

Engines only ever see 8-bit RGB; everything format-specific (EXIF orientation, palettes, CMYK, 16-bit,
alpha, ICC profiles, decompression bombs, damaged files) is handled here, with errors a person understands.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import pi_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from bus import texts

with contextlib.suppress(ImportError):  # rav1e/SVT AVIF codecs; Pillow ≥ 11.3 also reads AVIF natively
    import pillow_avif  # noqa: F401

# HEIC/HEIF, decode only (pi-heif: libheif with the LGPL libde265 decoder, no GPL encoder). libheif applies the
# file's rotation and mirroring itself and pi-heif then resets the EXIF orientation to 1, so it is not applied twice.
pi_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "HEIF", "BMP", "TIFF")
_FORMAT_ALIASES = {"MPO": "JPEG"}  # phone cameras write multi-picture JPEGs; Pillow calls them MPO
#: The formats as a person names them, in the sentences of :class:`ImageError` (``bus.texts``).
_SUPPORTED_NAMES = ("JPEG", "PNG", "WebP", "AVIF", "HEIC", "BMP", "TIFF")
#: ``output_quality``'s default (``bus.schemas.EnhanceOptions``): JPEG, WebP and AVIF.
DEFAULT_QUALITY = 92
#: The ``output_format`` option's formats → (Pillow's name, content type, file extension).
OUTPUT_FORMATS = {"jpeg": ("JPEG", "image/jpeg", "jpg"), "png": ("PNG", "image/png", "png"),
                  "webp": ("WEBP", "image/webp", "webp"), "avif": ("AVIF", "image/avif", "avif")}


class ImageError(ValueError):
    """The upload cannot be used; raised with what the user is told (a ``bus.texts`` sentence, whose ``str()`` is
    the English)."""


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
        raise ImageError(texts.IMAGE_TOO_MANY_PIXELS(width=w, height=h, megapixels=_megapixels(w * h),
                                                     limit=_megapixels(max_pixels)))
    fmt = _FORMAT_ALIASES.get(img.format or "", img.format or "")
    if fmt not in SUPPORTED_FORMATS:
        supported = texts.listing(_SUPPORTED_NAMES, "or")
        raise ImageError(texts.IMAGE_FORMAT_NOT_SUPPORTED(format=fmt, supported=supported) if fmt
                         else texts.IMAGE_UNKNOWN_FORMAT(supported=supported))
    source_mode = img.mode
    try:
        img.load()
        img = _orient(img)
        rgb, alpha, icc = _to_rgb(img, img.info.get("icc_profile"))
    except ImageError:
        raise
    except Exception as exc:  # every plugin fails differently on broken data
        raise ImageError(texts.IMAGE_DAMAGED()) from exc
    if alpha is not None and int(alpha.min()) == 255:
        alpha = None  # fully opaque: no need to carry it through
    return Decoded(rgb=rgb, alpha=alpha, icc=icc, source_format=fmt, mode=source_mode)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        size = texts.IMAGE_SIZE(megapixels=_megapixels(int(m.group(1)))) if m else texts.verbatim("")
        raise ImageError(texts.IMAGE_TOO_LARGE(size=size, limit=_megapixels(max_pixels))) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(texts.IMAGE_UNKNOWN_FORMAT(supported=texts.listing(_SUPPORTED_NAMES, "or"))) from exc
    except Exception as exc:
        raise ImageError(texts.IMAGE_DAMAGED()) from exc


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
    # A grayscale profile on what is now RGB data would be wrong; keep only RGB profiles, and only those that
    # parse (a damaged one embedded in the result could make a viewer show nothing, or wrong colours).
    return rgb, alpha, icc if _icc_space(icc) == "RGB " and _parses(icc) else None


def _parses(icc: bytes) -> bool:
    try:
        ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.warning("Ignoring an unreadable ICC profile (%s); the photo is taken as sRGB", exc)
        return False
    return True


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


def shrink(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` reduced to ``size`` = (width, height) by pixel-area averaging (no moiré), or itself when it is
    that size already: how a result that would exceed the output limits is made smaller (``bus.output_size``)."""
    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))


def choose_format(output_format: str, source_format: str, has_alpha: bool) -> str:
    """The format written: the one asked, or for ``auto`` PNG when the upload was PNG or has transparency
    (JPEG cannot hold it), else JPEG, as the original service wrote."""
    if output_format != "auto":
        return output_format
    return "png" if source_format == "PNG" or has_alpha else "jpeg"


def encode(
    rgb: np.ndarray, alpha: np.ndarray | None, icc: bytes | None, source_format: str, *,
    output_format: str = "auto", quality: int = DEFAULT_QUALITY,
) -> tuple[bytes, str, str]:
    """Encode a result; returns (bytes, content type, file extension without the dot).

    ``output_format`` is the person's choice (see :func:`choose_format` for ``auto``); ``quality`` applies to
    JPEG, WebP and AVIF. Transparency is kept by PNG, WebP and AVIF; a JPEG is composited over white, as the
    picture shows on a white page. The ICC profile is embedded as it came (an RGB one; CMYK was converted to
    sRGB), so colours show as in the original, wide-gamut ones included. Nothing else of the upload's metadata
    is written: no EXIF (so no GPS position, camera serial number, maker notes or orientation tag that would
    rotate the already-upright pixels a second time), no XMP, no text chunks.
    """
    if alpha is not None and alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha {alpha.shape} does not match image {rgb.shape[:2]}")
    fmt = choose_format(output_format, source_format, alpha is not None)
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r}")
    pillow_name, content_type, ext = OUTPUT_FORMATS[fmt]
    if fmt == "png":
        return encode_png(rgb if alpha is None else np.dstack((rgb, alpha)), icc), content_type, ext
    img = Image.fromarray(rgb, "RGB")
    if alpha is not None:
        mask = Image.fromarray(alpha, "L")
        if fmt == "jpeg":
            img = Image.composite(img, Image.new("RGB", img.size, (255, 255, 255)), mask)
        else:
            img.putalpha(mask)
    params: dict[str, object] = {"icc_profile": icc} if icc else {}
    params["quality"] = quality
    buf = io.BytesIO()
    img.save(buf, pillow_name, **params)
    return buf.getvalue(), content_type, ext


# --- PNG -----------------------------------------------------------------------------------------------------
# Pillow takes 1.3-1.9 s of CPU for a 2048² result (level 6), nearly all of it zlib's deflate, on one thread:
# PNG has a single compressed stream. OpenCV is fast only at its default low level (files 11-42 % larger) and
# drops the ICC profile. So the PNG is written here: every row Paeth-filtered (numpy), then deflated by zlib-ng
# (the same format; at level 7 its files are as small as zlib's level 6, for 1.2-3.5x less CPU) in bands on
# several threads, into one zlib stream, as pigz does: each band is a raw deflate stream primed with the
# 32 KiB before it (so it finds the matches one stream would) and ended on a byte boundary (a sync flush), the
# last one finished, then the Adler-32 of all. Figures: docs/performance.md ("Encoding a PNG result").
try:
    from zlib_ng import zlib_ng as _deflate

    #: The deflate level: zlib-ng's 7, whose files match or beat Pillow's default (zlib's 6) in size.
    PNG_LEVEL = 7
except ImportError:  # a checkout installed before zlib-ng was a dependency: Pillow's own zlib and level
    _deflate = zlib  # type: ignore[no-redef]
    PNG_LEVEL = 6
_PNG_STRATEGY = zlib.Z_FILTERED  # as Pillow's PNG encoder: right for filtered rows
_PAETH = 4  # PNG's filter type byte
_WINDOW = 32 * 1024  # deflate's window: what a band is primed with
#: The least raw bytes in a band (there are up to four bands per thread): a small image is one band, deflated
#: on the calling thread.
_MIN_BAND = 256 * 1024
_IDAT_BYTES = 1 << 20
_png_pool: ThreadPoolExecutor | None = None
_png_pool_lock = threading.Lock()


def _png_threads() -> int:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(usable, 8))


def _pool() -> ThreadPoolExecutor:
    global _png_pool
    with _png_pool_lock:
        if _png_pool is None:
            _png_pool = ThreadPoolExecutor(_png_threads(), thread_name_prefix="png")
        return _png_pool


def _paeth(rows: np.ndarray, above: np.ndarray | None, bpp: int, out: np.ndarray) -> None:
    """PNG's Paeth filter of ``rows`` (n × row bytes, uint8) into ``out``; ``above`` is the row before them
    (None for the first row of the image)."""
    n, width = rows.shape
    ext = np.zeros((n + 1, width + bpp), np.int16)  # a zero column on the left and the row above on top
    if above is not None:
        ext[0, bpp:] = above
    ext[1:, bpp:] = rows
    left, up, upleft = ext[1:, :-bpp], ext[:-1, bpp:], ext[:-1, :-bpp]
    pa = up - upleft  # |p - left|, p = left + up - upleft
    pb = left - upleft  # |p - up|
    pc = pa + pb  # |p - upleft|
    np.abs(pa, out=pa)
    np.abs(pb, out=pb)
    np.abs(pc, out=pc)
    predicted = np.where(pb <= pc, up, upleft)
    use_left = pa <= pb
    use_left &= pa <= pc
    np.copyto(predicted, left, where=use_left)
    np.subtract(rows, predicted, out=out, casting="unsafe")  # modulo 256


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(pixels: np.ndarray, icc: bytes | None = None) -> bytes:
    """An 8-bit PNG of ``pixels`` (HxWx3 RGB or HxWx4 RGBA, uint8) with ``icc`` as its ``iCCP`` chunk and no
    other metadata; see the comment above for how it is compressed."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or not pixels.size:
        raise ValueError(f"expected HxWx3 or HxWx4 uint8, got {pixels.shape} {pixels.dtype}")
    height, width, channels = pixels.shape
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    stride = width * channels + 1  # a filter byte before each row
    filtered = np.empty((height, stride), np.uint8)
    filtered[:, 0] = _PAETH
    flat = filtered.reshape(-1)
    band_rows = max(1, -(-_MIN_BAND // stride), -(-height // (4 * _png_threads())))
    bands = [(r, min(height, r + band_rows)) for r in range(0, height, band_rows)]

    def filter_band(band: tuple[int, int]) -> None:
        r0, r1 = band
        _paeth(rows[r0:r1], rows[r0 - 1] if r0 else None, channels, filtered[r0:r1, 1:])

    def deflate_band(band: tuple[int, int]) -> bytes:
        r0, r1 = band
        primed = {"zdict": flat[max(0, r0 * stride - _WINDOW):r0 * stride]} if r0 else {}
        z = _deflate.compressobj(PNG_LEVEL, zlib.DEFLATED, -15, 9, _PNG_STRATEGY, **primed)
        return z.compress(filtered[r0:r1]) + z.flush(zlib.Z_FINISH if r1 == height else zlib.Z_SYNC_FLUSH)

    if len(bands) == 1:
        filter_band(bands[0])
        parts = [deflate_band(bands[0])]
    else:
        pool = _pool()
        list(pool.map(filter_band, bands))
        parts = list(pool.map(deflate_band, bands))
    # zlib's header (deflate, 32 KiB window, the level's class, no dictionary), the bands, the Adler-32 of all.
    header = b"\x78\x9c" if PNG_LEVEL == 6 else b"\x78\xda"
    stream = b"".join([header, *parts, struct.pack(">I", _deflate.adler32(filtered))])
    color_type = 6 if channels == 4 else 2
    out = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))]
    if icc:  # as Pillow names it; compression method 0 (zlib)
        out.append(_png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc)))
    out += [_png_chunk(b"IDAT", stream[i:i + _IDAT_BYTES]) for i in range(0, len(stream), _IDAT_BYTES)]
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)
