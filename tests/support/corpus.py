"""A corpus of broken and unusual images, generated here (the corpus and memory-bound tests send it)."""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import encode, photo
from .camera import RGBA_HEIF, camera_exif, display_p3


@dataclass(frozen=True)
class Case:
    name: str
    data: Callable[[], bytes]
    filename: str = "x.jpg"
    ctype: str = "image/jpeg"
    #: For accepted images: the expected output size at scale 2 and format; for refusals: the status.
    size: tuple[int, int] | None = None
    fmt: str = "JPEG"
    status: int | None = None


def small(name: str = "chelsea", size: tuple[int, int] = (24, 16)) -> Image.Image:
    return photo(name, size=size)


def jpeg_with_orientation(orientation: int) -> bytes:
    img = small(size=(24, 16))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", exif=exif.tobytes())


def png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@functools.cache
def real_png_bomb(width: int, height: int, channels: int = 1) -> bytes:
    """A valid PNG that really decodes to ``width`` x ``height`` (all black): a few hundred KB on the wire,
    hundreds of MB once decoded; making it takes no such memory here."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    color_type = {1: 0, 3: 2}[channels]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    # Each block of rows is deflated once and repeated: after a full flush the compressor starts afresh,
    # so every copy is the same bytes. The zlib header and Adler-32 are added by hand (they are correct).
    rows = 256
    block = b"\0" * ((width * channels + 1) * rows)  # each row: filter byte 0, then black pixels
    tail_rows = b"\0" * ((width * channels + 1) * (height % rows))
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
    tail = raw.compress(tail_rows) + raw.flush()
    adler = 1
    for _ in range(height // rows):
        adler = zlib.adler32(block, adler)
    idat = b"\x78\xda" + piece * (height // rows) + tail + struct.pack(">I", zlib.adler32(tail_rows, adler))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def corrupt_png_crc() -> bytes:
    data = bytearray(encode(small(), "PNG"))
    data[29] ^= 0xFF  # inside IHDR's CRC
    return bytes(data)


def animated(fmt: str) -> bytes:
    frames = [small(n) for n in ("chelsea", "coffee", "astronaut")]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def mode(img_mode: str, fmt: str = "PNG", **kw: object) -> Callable[[], bytes]:
    return lambda: encode(small().convert(img_mode), fmt, **kw)


def sixteen_bit_png() -> bytes:
    arr = (np.linspace(0, 65535, 24 * 16).reshape(16, 24)).astype(np.uint16)
    return encode(Image.fromarray(arr), "PNG")


def rgba_png() -> bytes:
    img = small().convert("RGBA")
    img.putalpha(Image.linear_gradient("L").resize(img.size))
    return encode(img, "PNG")


def palette_with_transparency() -> bytes:
    img = small().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(img, "PNG", transparency=0)


def big_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "x" * 60000  # ImageDescription: a 60 KB EXIF block
    return encode(small(), "JPEG", exif=exif.tobytes())


def big_icc() -> bytes:
    return encode(small(), "JPEG", icc_profile=bytes(range(256)) * 1024)  # 256 KB, not a real profile


def phone_jpeg() -> bytes:
    """As a phone saves it: sideways with EXIF orientation 6, GPS, serial number, maker notes, Display P3."""
    return encode(small(), "JPEG", quality=95, exif=camera_exif(6), icc_profile=display_p3())


def truncated(fmt: str) -> Callable[[], bytes]:
    def make() -> bytes:
        data = encode(small(size=(64, 48)), fmt)
        return data[: len(data) // 2]

    return make


CASES = [
    # --- refused, with a reason -----------------------------------------------------------------
    Case("zero bytes", lambda: b"", status=400),
    Case("text named .jpg", lambda: b"just some words, not a photo\n" * 20, status=400),
    Case("truncated JPEG", truncated("JPEG"), status=400),
    Case("truncated PNG", truncated("PNG"), "x.png", "image/png", status=400),
    Case("truncated WebP", truncated("WEBP"), "x.webp", "image/webp", status=400),
    Case("truncated AVIF", truncated("AVIF"), "x.avif", "image/avif", status=400),
    Case("PNG with a broken checksum", corrupt_png_crc, "x.png", "image/png", status=400),
    Case("GIF", lambda: encode(small(), "GIF"), "x.gif", "image/gif", status=415),
    Case("bomb 30000x30000 declared", lambda: png_declaring(30000, 30000), "b.png", "image/png", status=413),
    Case("bomb 10000x10000 declared", lambda: png_declaring(10000, 10000), "b.png", "image/png", status=413),
    Case("bomb 20000x20000 real PNG (400 MB decoded)", lambda: real_png_bomb(20000, 20000), "b.png", "image/png",
         status=413),
    Case("bomb 9000x9000 real RGB PNG (243 MB decoded)", lambda: real_png_bomb(9000, 9000, 3), "b.png",
         "image/png", status=413),
    Case("random bytes", lambda: np.random.default_rng(1).bytes(5000), status=400),
    Case("JPEG header, garbage after", lambda: b"\xff\xd8\xff\xe0" + b"\x00" * 500, status=400),
    # --- accepted, enhanced correctly (scale 2) ---------------------------------------------------
    Case("1x1 pixel", lambda: encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), "dot.png", "image/png",
         size=(2, 2), fmt="PNG"),
    Case("extreme aspect 300x2", lambda: encode(small(size=(300, 2))), size=(600, 4)),
    Case("extreme aspect 2x300", lambda: encode(small(size=(2, 300))), size=(4, 600)),
    Case("CMYK JPEG", mode("CMYK", "JPEG"), size=(48, 32)),
    Case("grayscale JPEG", mode("L", "JPEG"), size=(48, 32)),
    Case("grayscale+alpha PNG", mode("LA"), "la.png", "image/png", size=(48, 32), fmt="PNG"),
    Case("16-bit PNG", sixteen_bit_png, "deep.png", "image/png", size=(48, 32), fmt="PNG"),
    Case("palette PNG", mode("P"), "p.png", "image/png", size=(48, 32), fmt="PNG"),
    Case("palette PNG with transparency", palette_with_transparency, "pt.png", "image/png", size=(48, 32),
         fmt="PNG"),
    Case("RGBA PNG", rgba_png, "a.png", "image/png", size=(48, 32), fmt="PNG"),
    Case("animated WebP (first frame)", lambda: animated("WEBP"), "anim.webp", "image/webp", size=(48, 32)),
    Case("APNG (first frame)", lambda: animated("PNG"), "anim.png", "image/png", size=(48, 32), fmt="PNG"),
    Case("WebP", lambda: encode(small(), "WEBP"), "x.webp", "image/webp", size=(48, 32)),
    Case("AVIF", lambda: encode(small(), "AVIF"), "x.avif", "image/avif", size=(48, 32)),
    Case("BMP", lambda: encode(small(), "BMP"), "x.bmp", "image/bmp", size=(48, 32)),
    Case("progressive JPEG", lambda: encode(small(), "JPEG", progressive=True), size=(48, 32)),
    Case("phone JPEG (orientation 6, GPS, Display P3)", phone_jpeg, "IMG_0001.JPG", size=(32, 48)),
    Case("HEIF with transparency", RGBA_HEIF.read_bytes, "x.heic", "image/heic", size=(58, 200), fmt="PNG"),
    Case("TIFF", lambda: encode(small(), "TIFF"), "x.tiff", "image/tiff", size=(48, 32)),
    Case("PNG named .jpg", lambda: encode(small(), "PNG"), "liar.jpg", "image/jpeg", size=(48, 32), fmt="PNG"),
    Case("60 KB EXIF", big_exif, size=(48, 32)),
    Case("256 KB ICC profile", big_icc, size=(48, 32)),
    *[Case(f"EXIF orientation {o}", lambda o=o: jpeg_with_orientation(o),
           size=(48, 32) if o <= 4 else (32, 48)) for o in range(1, 9)],
]
