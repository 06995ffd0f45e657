"""Photos made the way cameras and phones make them: EXIF with an orientation, a GPS position, a serial number and
maker notes; a wide-gamut colour profile (Display P3, from a real iPhone HEIC); and what a result must (not) keep."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from . import photo

DATA = Path(__file__).resolve().parent.parent / "data" / "heic"
#: A photo from an iPhone XS (1025×900, Display P3 profile, EXIF with GPS), from pi-heif's test images.
IPHONE_HEIC = DATA / "iphone_xs.heic"
#: A 29×100 HEIF with an alpha channel, from pi-heif's test images.
RGBA_HEIF = DATA / "rgba_29x100.heif"

ORIENTATION, GPS_IFD, EXIF_IFD = 0x0112, 0x8825, 0x8769
MAKE, MODEL, BODY_SERIAL, MAKER_NOTE, DATE_ORIGINAL = 0x010F, 0x0110, 0xA431, 0x927C, 0x9003
SERIAL = "SN-0123456789"


@functools.cache
def display_p3() -> bytes:
    """The Display P3 ICC profile an iPhone embeds (read from the sample HEIC's metadata, no pixels decoded)."""
    import pi_heif

    pi_heif.register_heif_opener()
    with Image.open(IPHONE_HEIC) as img:
        icc = img.info["icc_profile"]
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip() == "Display P3"
    return icc


def camera_exif(orientation: int = 6) -> bytes:
    """EXIF as a phone writes it: make, model, orientation; serial number, maker notes, date; a GPS position."""
    exif = Image.Exif()
    exif[MAKE], exif[MODEL], exif[ORIENTATION] = "Apple", "iPhone 13 Pro", orientation
    sub = exif.get_ifd(EXIF_IFD)
    sub[BODY_SERIAL], sub[DATE_ORIGINAL] = SERIAL, "2024:05:01 10:00:00"
    sub[MAKER_NOTE] = b"Apple iOS\x00" + bytes(range(64))
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (39.0, 54.0, 27.0), 3: "E", 4: (116.0, 23.0, 50.0)})
    return exif.tobytes()


def colourful(size: tuple[int, int] = (60, 40)) -> Image.Image:
    """A real photo with four patches of strong colour in its lower right quarter, where a colour profile
    that is dropped or applied twice shows (``patch_centres`` are their middles, in this upright picture)."""
    img = photo("chelsea", size=size)
    w, h = size
    pw, ph = w // 4, h // 4
    for i, colour in enumerate(PATCHES):
        x, y = w // 2 + (i % 2) * pw, h // 2 + (i // 2) * ph
        img.paste(colour, (x, y, x + pw, y + ph))
    return img


#: Strong colours that look clearly different read as Display P3 and as sRGB (20–40 levels in some channel).
PATCHES = ((200, 40, 40), (40, 170, 60), (50, 60, 200), (220, 200, 40))


def patch_centres(size: tuple[int, int]) -> list[tuple[int, int]]:
    w, h = size
    pw, ph = w // 4, h // 4
    return [(w // 2 + (i % 2) * pw + pw // 2, h // 2 + (i // 2) * ph + ph // 2) for i in range(len(PATCHES))]


def seen(img: Image.Image) -> np.ndarray:
    """The picture as a colour-managed viewer shows it on an sRGB screen: converted from its embedded profile
    (none: sRGB already), transparency ignored."""
    rgb = img.convert("RGB")
    icc = img.info.get("icc_profile")
    if icc:
        rgb = ImageCms.profileToProfile(rgb, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                        ImageCms.createProfile("sRGB"), outputMode="RGB")
    return np.asarray(rgb, np.int16)


def as_p3(img: Image.Image) -> np.ndarray:
    """How ``img``'s values, tagged Display P3, look on an sRGB screen."""
    return seen(_tagged(img, display_p3()))


def _tagged(img: Image.Image, icc: bytes) -> Image.Image:
    copy = img.convert("RGB")
    copy.info["icc_profile"] = icc
    return copy


def identifying_metadata(data: bytes) -> list[str]:
    """What of a photo's identifying metadata a file still carries (empty: nothing)."""
    img = Image.open(io.BytesIO(data))
    found = []
    exif = img.getexif()
    if exif.get_ifd(GPS_IFD) or GPS_IFD in exif:
        found.append("GPS")
    sub = exif.get_ifd(EXIF_IFD)
    if BODY_SERIAL in sub:
        found.append("serial number")
    if MAKER_NOTE in sub:
        found.append("maker notes")
    if MAKE in exif or MODEL in exif:
        found.append("camera make/model")
    if ORIENTATION in exif and exif[ORIENTATION] != 1:
        found.append(f"orientation {exif[ORIENTATION]}")
    if img.info.get("xmp") or img.info.get("XML:com.adobe.xmp"):
        found.append("XMP")
    for marker, what in ((SERIAL.encode(), "serial text"), (b"Apple iOS", "maker note bytes"),
                         (b"iPhone", "model text")):
        if marker in data:  # anywhere in the file, whatever box or chunk might hold it
            found.append(what)
    return found
