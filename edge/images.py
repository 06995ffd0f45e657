"""Checking an upload before it is accepted: is it an image we can read, and is it sane?

The enhancer decodes again (it must protect itself), but the user gets the verdict here, at
once, as a 4xx with a clear sentence — not minutes later as a failed task.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import pi_heif
from PIL import Image, UnidentifiedImageError

from bus.texts import listing

from . import texts
from .errors import ApiError

with contextlib.suppress(ImportError):  # AVIF codecs beyond Pillow's own (Pillow >= 11.3 reads AVIF too)
    import pillow_avif  # noqa: F401

# HEIC/HEIF (iPhones and many Android phones), decode only: pi-heif carries libheif and the LGPL libde265
# decoder, without the GPL x265 encoder that pillow-heif's wheels bundle.
pi_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

SUPPORTED = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "AVIF": "image/avif",
             "HEIF": "image/heif", "BMP": "image/bmp", "TIFF": "image/tiff"}
#: The formats as a person names them, in sentences (``JPEG, PNG, ... and TIFF``; ``JPEG、PNG、...、TIFF``).
SUPPORTED_NAMES = ("JPEG", "PNG", "WebP", "AVIF", "HEIC", "BMP", "TIFF")
SUPPORTED_TEXT = str(listing(SUPPORTED_NAMES))


@dataclass(frozen=True)
class ImageInfo:
    format: str
    content_type: str
    width: int
    height: int


#: Formats read as another: a multi-picture JPEG is a JPEG whose first picture is the photo.
_ALIASES = {"MPO": "JPEG"}


def inspect(fp: BinaryIO, *, max_pixels: int) -> ImageInfo:
    """Identify, bound and fully decode the image (a truncated file only shows when decoding)."""
    fp.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(fp)
            # Many phones save a multi-picture JPEG (Pillow: "MPO"); its first picture is the photo.
            fmt = _ALIASES.get((img.format or "").upper(), (img.format or "").upper())
            if fmt not in SUPPORTED:
                supported = listing(SUPPORTED_NAMES)
                raise ApiError(415, texts.UPLOAD_FORMAT(format=fmt, supported=supported) if fmt
                               else texts.UPLOAD_FORMAT_UNNAMED(supported=supported))
            width, height = img.size
            if width < 1 or height < 1:
                raise ApiError(400, texts.UPLOAD_NO_PIXELS())
            if width * height > max_pixels:
                raise ApiError(413, texts.UPLOAD_TOO_MANY_PIXELS(width=width, height=height,
                                                                 megapixels=width * height / 1e6,
                                                                 limit=max_pixels / 1e6))
            img.load()
    except ApiError:
        raise
    except UnidentifiedImageError as e:
        raise ApiError(400, texts.UPLOAD_NOT_AN_IMAGE(supported=listing(SUPPORTED_NAMES))) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ApiError(400, texts.UPLOAD_DAMAGED()) from e
    except Image.DecompressionBombError as e:  # Pillow refuses to even open it: far beyond our limit
        raise ApiError(413, texts.UPLOAD_BOMB(over=2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6,
                                              limit=max_pixels / 1e6)) from e
    finally:
        fp.seek(0)
    return ImageInfo(format=fmt, content_type=SUPPORTED[fmt], width=width, height=height)
