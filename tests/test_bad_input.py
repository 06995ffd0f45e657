"""Every bad input gets a 4xx with a sentence a person understands, and the service keeps serving."""

from __future__ import annotations

import struct
import zlib

import httpx
import pytest

from .support import encode, photo


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header declares a huge image (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


JPEG = encode(photo(size=(64, 48)))
CASES = [
    ("empty file", ("e.jpg", b"", "image/jpeg"), 400, "empty"),
    ("not an image", ("notes.jpg", b"hello, this is text, not a photo" * 10, "image/jpeg"), 400, "not an image"),
    ("truncated JPEG", ("cut.jpg", JPEG[: len(JPEG) // 2], "image/jpeg"), 400, "damaged or incomplete"),
    ("corrupted PNG", ("bad.png", encode(photo(size=(40, 40)), "PNG")[:60] + b"\0" * 200, "image/png"), 400,
     "damaged or incomplete"),
    ("unsupported GIF", ("anim.gif", encode(photo(size=(40, 40)), "GIF"), "image/gif"), 415, "not supported"),
    ("decompression bomb", ("bomb.png", png_declaring(30000, 30000), "image/png"), 413, "megapixels"),
]


@pytest.mark.parametrize(("label", "upload", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_upload_is_refused_clearly(http: httpx.Client, label: str, upload: tuple, status: int,
                                       words: str) -> None:
    r = http.post("/api/v1/enhance", files={"file": upload})
    assert r.status_code == status, r.text
    message = r.json()["error"]
    assert words in message.lower() and message.endswith("."), message


def test_no_file_field(http: httpx.Client) -> None:
    r = http.post("/api/v1/enhance", data={"tile_size": "400"})
    assert r.status_code == 400 and "field named 'file'" in r.json()["error"]
    r = http.post("/api/v1/enhance", files={"image": ("x.jpg", JPEG, "image/jpeg")})
    assert r.status_code == 400 and "field named 'file'" in r.json()["error"]


def test_oversized_upload_is_cut_off_with_413(http: httpx.Client) -> None:
    big = b"\xff\xd8" + bytes(6 * 1024 * 1024)  # over the suite's 5 MB limit
    r = http.post("/api/v1/enhance", files={"file": ("huge.jpg", big, "image/jpeg")})
    assert r.status_code == 413
    assert r.json()["error"] == "The upload is too large. The maximum size is 5 MB."


def test_oversized_chunked_upload_without_length_is_cut_off(http: httpx.Client) -> None:
    """No Content-Length to trust: the body is counted as it streams and refused past the limit."""
    boundary = "x" * 16
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"h.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(7):
            yield bytes(1024 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = http.post("/api/v1/enhance", content=body(),
                  headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and "maximum size is 5 MB" in r.json()["error"]


@pytest.mark.parametrize(("params", "words"), [
    ({"scale": "3"}, "scale must be 2 or 4"),
    ({"quality_level": "ultra"}, "quality_level must be one of fast, medium, high"),
    ({"tile_size": "abc"}, "tile_size must be a whole number"),
    ({"tile_size": "5"}, "tile_size must be 0"),
    ({"face_enhance": "maybe"}, "face_enhance must be true, false or auto"),
])
def test_bad_options_are_explained(http: httpx.Client, params: dict, words: str) -> None:
    r = http.post("/api/v1/enhance", files={"file": ("x.jpg", JPEG, "image/jpeg")}, data=params)
    assert r.status_code == 422 and words in r.json()["error"], r.text


def test_wrong_content_type_but_real_image_is_accepted(http: httpx.Client) -> None:
    """The bytes decide, not the label a client put on them."""
    r = http.post("/api/v1/enhance?quality_level=fast&scale=2",
                  files={"file": ("photo.txt", encode(photo(size=(32, 24))), "text/plain")})
    assert r.status_code == 200 and r.json()["status"] == "queued"


def test_unknown_route_and_method(http: httpx.Client) -> None:
    assert http.get("/api/v1/nope").json() == {"error": "There is no such API endpoint."}
    r = http.get("/api/v1/enhance")
    assert r.status_code == 405 and r.json() == {"error": "This HTTP method is not allowed here."}


def test_service_still_healthy_after_all_that(http: httpx.Client) -> None:
    assert http.get("/api/v1/health").json()["status"] == "healthy"
