"""The mini-program's newer flow with a real presigned S3 URL: PUT to storage, then one synchronous call;
and what a presigned URL can no longer be used for (oversize, swapped bytes, reuse, leftovers)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi.testclient import TestClient
from minio import Minio
from minio.error import S3Error
from PIL import Image

from bus.settings import NatsSettings, S3Settings, TaskSettings
from bus.storage import ObjectStore
from edge import staging
from edge.app import create_app
from edge.settings import EdgeSettings

from .support import Stack, encode, photo


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


# --- what a URL can store, and what a task processes ------------------------------------------------
def admin_client(stack: Stack) -> Minio:
    keys = stack.s3.env("admin")
    return Minio(stack.s3.endpoint.removeprefix("http://"), access_key=keys["S3_ACCESS_KEY"],
                 secret_key=keys["S3_SECRET_KEY"], secure=False, region="us-east-1")


def exists(stack: Stack, key: str) -> bool:
    try:
        admin_client(stack).stat_object(stack.s3.bucket, key)
        return True
    except S3Error as e:
        assert e.code in ("NoSuchKey", "NoSuchObject"), e.code
        return False


def test_upload_url_lives_minutes(http: httpx.Client) -> None:
    ticket = upload_url(http)
    assert ticket["expires_in"] == 300
    assert parse_qs(urlsplit(ticket["presigned_url"]).query)["X-Amz-Expires"] == ["300"]


def test_a_sized_url_stores_exactly_that_many_bytes(http: httpx.Client, stack: Stack) -> None:
    data = encode(photo("astronaut", size=(40, 40)))
    r = http.post("/api/v1/upload/presigned-url", json={"filename": "selfie.jpg", "size": len(data)})
    assert r.status_code == 200 and r.json()["max_size"] == len(data)
    url, key = r.json()["presigned_url"], r.json()["file_key"]
    # The storage itself refuses any other length: the signature covers Content-Length.
    assert httpx.put(url, content=data + b"\0" * 4096).status_code == 403
    assert not exists(stack, key)
    assert httpx.put(url, content=data[:-1]).status_code == 403
    assert httpx.put(url, content=data, headers={"Content-Type": "image/jpeg"}).status_code == 200
    assert admin_client(stack).stat_object(stack.s3.bucket, key).size == len(data)
    too_big = http.post("/api/v1/upload/presigned-url", json={"filename": "x.jpg", "size": 5 * 1024 * 1024 + 1})
    assert too_big.status_code == 413 and "5 MB" in too_big.json()["error"]


def test_oversize_upload_is_refused_and_deleted(http: httpx.Client, stack: Stack) -> None:
    ticket = upload_url(http)  # no size stated: bounded by the upload limit (MAX_UPLOAD_MB=5 in the tests)
    big = encode(photo("astronaut", size=(32, 32))) + b"\0" * (5 * 1024 * 1024)
    assert httpx.put(ticket["presigned_url"], content=big, timeout=60).status_code == 200
    r = http.post("/api/v1/single-process-uploaded-image", json={"file_key": ticket["file_key"]})
    assert r.status_code == 413 and "too large" in r.json()["error"]
    assert not exists(stack, ticket["file_key"])


def test_bytes_put_after_processing_change_nothing_and_a_key_becomes_one_task(http: httpx.Client,
                                                                                stack: Stack) -> None:
    ticket = upload_url(http)
    original = encode(photo("astronaut", size=(40, 40)))
    assert httpx.put(ticket["presigned_url"], content=original).status_code == 200
    r = http.post("/api/v1/single-process-uploaded-image", json={"file_key": ticket["file_key"]}, timeout=180)
    assert r.status_code == 200, r.text
    done = r.json()
    assert not exists(stack, ticket["file_key"])  # the staging object is gone once its bytes are the task's
    result = httpx.get(done["cdn_url"]).content

    # The URL is still valid: swap in other bytes through it.
    swapped = encode(photo("chelsea", size=(60, 40)))
    assert httpx.put(ticket["presigned_url"], content=swapped).status_code == 200
    admin = admin_client(stack)
    inputs = [o.object_name for o in admin.list_objects(stack.s3.bucket, prefix=f"inputs/{done['task_id']}/",
                                                         recursive=True)]
    assert len(inputs) == 1 and admin.get_object(stack.s3.bucket, inputs[0]).read() == original
    # Asking again (a retry after a lost answer) gets the same task's answer; the swapped bytes are
    # deleted, never processed.
    again = http.post("/api/v1/single-process-uploaded-image", json={"file_key": ticket["file_key"]})
    assert again.status_code == 200 and again.json()["task_id"] == done["task_id"]
    assert not exists(stack, ticket["file_key"])
    assert httpx.get(again.json()["cdn_url"]).content == result
    assert Image.open(io.BytesIO(result)).size == (160, 160)


def test_concurrent_requests_for_one_key_make_one_task(http: httpx.Client, stack: Stack) -> None:
    ticket = upload_url(http)
    assert httpx.put(ticket["presigned_url"], content=encode(photo("astronaut", size=(40, 40)))).status_code == 200

    def process() -> httpx.Response:
        return httpx.post(f"{stack.url}/api/v1/single-process-uploaded-image",
                          json={"file_key": ticket["file_key"]}, timeout=180)

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: process(), range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    task_ids = {a.json()["task_id"] for a in answers}
    assert len(task_ids) == 1  # one task, one charge; every caller gets its answer
    task_id = task_ids.pop()
    admin = admin_client(stack)
    inputs = list(admin.list_objects(stack.s3.bucket, prefix=f"inputs/{task_id}/", recursive=True))
    assert 1 <= len(inputs) <= 3  # a loser's copy may remain (unprocessed; the lifecycle expires it)


async def test_staging_objects_never_processed_are_swept(stack: Stack) -> None:
    """The edge's janitor, run here with the edge's own keys: old uploads go, oversized ones at once."""
    keys = stack.s3.env("edge")
    store = ObjectStore(S3Settings(endpoint=stack.s3.endpoint, bucket=stack.s3.bucket,
                                   access_key=keys["S3_ACCESS_KEY"], secret_key=keys["S3_SECRET_KEY"]))
    limit = 1024
    fresh, old = staging.new_key("fresh.jpg", limit), staging.new_key("old.jpg", 10)
    oversized = staging.new_key("big.jpg", 10)
    await store.put_bytes(fresh, b"x" * 100, "image/jpeg")
    await store.put_bytes(oversized, b"x" * 11, "image/jpeg")
    assert await staging.sweep(store, max_age=3600, max_upload=limit) >= 1
    assert exists(stack, fresh) and not exists(stack, oversized)

    await store.put_bytes(old, b"x" * 5, "image/jpeg")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1, seconds=1)
    assert await staging.sweep(store, max_age=3600, max_upload=limit, now=later) >= 2
    assert not exists(stack, fresh) and not exists(stack, old)

    # The janitor the edge runs: it sweeps by itself, every STAGING_SWEEP_SECONDS.
    await store.put_bytes(fresh, b"x" * 100, "image/jpeg")
    settings = SimpleNamespace(staging_max_age=0.0, staging_sweep_seconds=0.1, max_upload_bytes=limit)
    async with staging.janitor(SimpleNamespace(store=store, settings=settings)):  # type: ignore[arg-type]
        for _ in range(100):
            if not exists(stack, fresh):
                break
            await asyncio.sleep(0.1)
    assert not exists(stack, fresh)


def test_issuing_urls_counts_against_the_per_client_limit() -> None:
    """The same per-client budget as uploads (RATE_LIMIT_ENHANCE), with the edge's own configuration."""
    settings = EdgeSettings(nats=NatsSettings(), s3=S3Settings(), tasks=TaskSettings(), rate_enhance="3/60")
    client = TestClient(create_app(settings), raise_server_exceptions=False)  # no lifespan: the limiter comes first
    codes = [client.post("/api/v1/upload/presigned-url", json={}).status_code for _ in range(2)]
    codes.append(client.post("/api/v1/enhance", files={"file": ("x.jpg", b"x", "image/jpeg")}).status_code)
    assert 429 not in codes
    r = client.post("/api/v1/upload/presigned-url", json={})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
