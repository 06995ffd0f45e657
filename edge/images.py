"""Checking an upload before it is accepted: is it an image we can read, and is it sane?

The enhancer decodes again (it must protect itself), but the user gets the verdict here, at
once, as a 4xx with a clear sentence — not minutes later as a failed task.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from .errors import ApiError

with contextlib.suppress(ImportError):  # AVIF codecs beyond Pillow's own (Pillow >= 11.3 reads AVIF too)
    import pillow_avif  # noqa: F401

SUPPORTED = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "AVIF": "image/avif",
             "BMP": "image/bmp", "TIFF": "image/tiff"}
SUPPORTED_TEXT = "JPEG, PNG, WebP, AVIF, BMP and TIFF"


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
                raise ApiError(415, f"Images in {fmt or 'this'} format are not supported. "
                                    f"Supported formats: {SUPPORTED_TEXT}.")
            width, height = img.size
            if width < 1 or height < 1:
                raise ApiError(400, "The image has no pixels.")
            if width * height > max_pixels:
                raise ApiError(413, f"The image is {width}×{height} pixels ({width * height / 1e6:.1f} megapixels); "
                                    f"the limit is {max_pixels / 1e6:g} megapixels.")
            img.load()
    except ApiError:
        raise
    except UnidentifiedImageError as e:
        raise ApiError(400, f"The file is not an image we can read. Supported formats: {SUPPORTED_TEXT}.") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ApiError(400, "The image file is damaged or incomplete (it could not be decoded).") from e
    except Image.DecompressionBombError as e:  # Pillow refuses to even open it: far beyond our limit
        raise ApiError(413, f"The image is too large (over {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} "
                            f"megapixels); the limit is {max_pixels / 1e6:g} megapixels.") from e
    finally:
        fp.seek(0)
    return ImageInfo(format=fmt, content_type=SUPPORTED[fmt], width=width, height=height)
