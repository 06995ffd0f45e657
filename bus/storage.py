"""Object storage for images (S3 API through the ``minio`` SDK), without blocking the event loop.

The SDK is synchronous, so every call runs in a worker thread. Keys are built here so that
the edge and the enhancer agree on the layout: ``inputs/<task>/...``, ``outputs/<task>/...``,
``uploads/<token>/...`` (presigned client uploads).
"""

from __future__ import annotations

import asyncio
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO
from urllib.parse import urlsplit

from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.error import S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from .settings import S3Settings

PREFIXES = ("inputs/", "outputs/", "uploads/")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class StorageError(RuntimeError):
    """Object storage failed or is unreachable; carries the key involved."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"{message} (key {key})" if key else message)
        self.key = key


class ObjectMissing(StorageError):
    """The key does not exist (expired, never uploaded, or a wrong key)."""


def display_name(filename: str, default: str = "image") -> str:
    """The user's file name without any path or control characters (kept for download names)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"').strip()
    return name[-120:] or default


def safe_name(filename: str, default: str = "image") -> str:
    """A name that is safe in object keys and paths (the original used client names raw)."""
    stem, dot, ext = display_name(filename).rpartition(".")
    if not dot:
        stem, ext = ext, ""
    stem = _UNSAFE.sub("_", stem).strip("._-")[:80] or default
    ext = _UNSAFE.sub("", ext)[:10]
    return f"{stem}.{ext}" if ext else stem


def input_key(task_id: str, filename: str) -> str:
    return f"inputs/{task_id}/{safe_name(filename)}"


def output_key(task_id: str, filename: str) -> str:
    return f"outputs/{task_id}/{safe_name(filename)}"


def upload_key(token: str, filename: str) -> str:
    return f"uploads/{token}/{safe_name(filename)}"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str | None


def _client(endpoint: str, s: S3Settings) -> Minio:
    url = urlsplit(endpoint)
    return Minio(
        url.netloc,
        access_key=s.access_key,
        secret_key=s.secret_key,
        secure=url.scheme == "https",
        region=s.region,
    )


class ObjectStore:
    """Async facade over one bucket."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._client = _client(settings.endpoint, settings)
        # Presigned URLs are signed for the host clients use, which may differ from ours.
        self._public = _client(settings.public_endpoint or settings.endpoint, settings)

    async def _run(self, fn, *args, key: str | None = None, **kwargs):
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject", "NotFound", "NoSuchUpload"):
                raise ObjectMissing("no such object", key=key) from e
            raise StorageError(f"object storage refused the request: {e.code}", key=key) from e
        except OSError as e:  # urllib3 connection errors are OSErrors
            raise StorageError(f"object storage is unreachable: {e}", key=key) from e
        except Exception as e:
            if type(e).__module__.startswith("urllib3"):
                raise StorageError(f"object storage is unreachable: {e}", key=key) from e
            raise

    async def ensure_bucket(self, retention_hours: float) -> None:
        """Create the bucket and expire every image after the retention (whole days, S3's unit)."""

        def make() -> None:
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket)
                except S3Error as e:  # another process created it in between
                    if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            days = max(1, math.ceil(retention_hours / 24))
            rules = [
                Rule(ENABLED, rule_filter=Filter(prefix=p), rule_id=f"expire-{p.rstrip('/')}",
                     expiration=Expiration(days=days))
                for p in PREFIXES
            ]
            self._client.set_bucket_lifecycle(self.bucket, LifecycleConfig(rules))

        await self._run(make)

    async def ping(self) -> None:
        await self._run(self._client.bucket_exists, self.bucket)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        await self._run(self._client.put_object, self.bucket, key, io.BytesIO(data), len(data),
                        content_type=content_type, key=key)

    async def put_stream(self, key: str, stream: BinaryIO, size: int, content_type: str) -> None:
        await self._run(self._client.put_object, self.bucket, key, stream, size,
                        content_type=content_type, key=key)

    async def get_bytes(self, key: str) -> bytes:
        def read() -> bytes:
            resp = self._client.get_object(self.bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return await self._run(read, key=key)

    async def stat(self, key: str) -> ObjectInfo:
        st = await self._run(self._client.stat_object, self.bucket, key, key=key)
        return ObjectInfo(key=key, size=st.size or 0, content_type=st.content_type)

    async def open_stream(self, key: str, chunk: int = 256 * 1024) -> Iterator[bytes]:
        """A blocking iterator over the object's bytes (for a threadpool-driven streaming response)."""
        resp = await self._run(self._client.get_object, self.bucket, key, key=key)

        def chunks() -> Iterator[bytes]:
            try:
                yield from resp.stream(chunk)
            finally:
                resp.close()
                resp.release_conn()

        return chunks()

    async def presigned_put(self, key: str, expires: timedelta) -> str:
        return await self._run(self._public.presigned_put_object, self.bucket, key, expires=expires, key=key)

    async def presigned_get(self, key: str, expires: timedelta, filename: str | None = None) -> str:
        headers = {"response-content-disposition": f'attachment; filename="{filename}"'} if filename else None
        return await self._run(self._public.presigned_get_object, self.bucket, key, expires=expires,
                               response_headers=headers, key=key)

    async def remove(self, key: str) -> None:
        await self._run(self._client.remove_object, self.bucket, key, key=key)
