"""The mini-program's newer flow with a real presigned S3 URL: PUT to storage, then one synchronous call."""

from __future__ import annotations

import io

import httpx
from PIL import Image

from .support import encode, photo


def upload_url(http: httpx.Client, filename: str = "selfie.jpg") -> dict:
    r = http.post("/api/v1/upload/presigned-url", json={"filename": filename})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["method"] == "PUT" and body["file_key"] == body["cos_key"]
    assert body["file_key"].startswith("uploads/") and body["file_key"].endswith("/selfie.jpg")
    return body


def test_presigned_upload_then_synchronous_processing(http: httpx.Client) -> None:
    ticket = upload_url(http)
    put = httpx.put(ticket["presigned_url"], content=encode(photo("astronaut", size=(48, 48))))
    assert put.status_code == 200, put.text

    # The mini-program names the key cos_key and sends tile_size/quality_level as JSON.
    r = http.post("/api/v1/single-process-uploaded-image",
                  json={"cos_key": ticket["file_key"], "tile_size": 400, "quality_level": "fast"}, timeout=180)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["status"] == "completed"
    for key in ("download_time", "processing_time", "upload_time", "total_time"):
        assert isinstance(body[key], float) and body[key] >= 0, key
    assert body["total_time"] >= body["processing_time"]

    result = httpx.get(body["cdn_url"])  # a presigned GET on the S3 server itself
    assert result.status_code == 200
    assert Image.open(io.BytesIO(result.content)).size == (192, 192)
    assert http.get(body["download_url"]).content == result.content


def test_tampered_presigned_url_is_rejected_by_storage(http: httpx.Client) -> None:
    ticket = upload_url(http)
    url = ticket["presigned_url"]
    i = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    forged = url[:i] + ("0" if url[i] != "0" else "1") + url[i + 1:]
    assert httpx.put(forged, content=b"evil").status_code == 403
    other_key = url.replace("selfie.jpg", "other.jpg")
    assert httpx.put(other_key, content=b"evil").status_code == 403


def test_processing_refuses_bad_keys_and_bad_files(http: httpx.Client) -> None:
    r = http.post("/api/v1/single-process-uploaded-image", json={})
    assert r.status_code == 400 and "file_key" in r.json()["error"]
    r = http.post("/api/v1/single-process-uploaded-image", json={"file_key": "inputs/abc/secret.jpg"})
    assert r.status_code == 400 and "not issued" in r.json()["error"]
    r = http.post("/api/v1/single-process-uploaded-image", json={"file_key": "uploads/" + "a" * 32 + "/x.jpg"})
    assert r.status_code == 404 and "Nothing was uploaded" in r.json()["error"]

    ticket = upload_url(http)
    assert httpx.put(ticket["presigned_url"], content=b"definitely not a photo").status_code == 200
    r = http.post("/api/v1/single-process-uploaded-image", json={"file_key": ticket["file_key"]})
    assert r.status_code == 400 and "not an image" in r.json()["error"]
    r = http.post("/api/v1/single-process-uploaded-image", json={"file_key": ticket["file_key"], "scale": 8})
    assert r.status_code == 422 and "scale must be 2 or 4" in r.json()["error"]
