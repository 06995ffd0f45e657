"""Object storage for images (S3 API through the ``minio`` SDK), without blocking the event loop.

The SDK is synchronous, so every call runs in a worker thread, with connect/read timeouts and a
bounded number of retries (``S3Settings``): a hung S3 server fails a call instead of holding a worker.
Keys are built here so that the edge and the enhancer agree on the layout: ``inputs/<task>/...``,
``outputs/<task>/...``, ``uploads/<token>/...`` (presigned client uploads, staging only).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO
from urllib.parse import quote, urlsplit

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.error import S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from .settings import S3Settings

PREFIXES = ("inputs/", "outputs/", "uploads/")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: A key nobody writes: reading it proves the server answers and knows our keys (see ``ping``).
_PROBE_KEY = "uploads/.probe"


class StorageError(RuntimeError):
    """Object storage failed or is unreachable; carries the key involved."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"{message} (key {key})" if key else message)
        self.key = key


class ObjectMissing(StorageError):
    """The key does not exist (expired, never uploaded, or a wrong key)."""


class ObjectTooLarge(ObjectMissing):
    """The object is larger than the caller accepts; refused before its bytes were read.

    A kind of ``ObjectMissing`` because it is just as permanent: no acceptable object is there."""

    def __init__(self, key: str, size: int | None, limit: int) -> None:
        super().__init__(f"the object is larger than {limit} bytes" + (f" ({size})" if size is not None else ""),
                         key=key)
        self.size = size
        self.limit = limit


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
    #: When the object was last written (listing and stat answer it; ``None`` when unknown).
    modified: dt.datetime | None = None


def sigv4_signature(secret_key: str, amz_date: str, region: str, service: str, canonical_request: str) -> str:
    """AWS Signature V4 over ``canonical_request`` (shared by presigned URLs and the S3 IAM API)."""
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _uri_encode(value: str, *, safe: str = "-_.~") -> str:
    return quote(value, safe=safe)


def presign_put_url(
    endpoint: str, bucket: str, key: str, *, access_key: str, secret_key: str, region: str, expires: int,
    content_length: int | None = None, now: dt.datetime | None = None,
) -> str:
    """A presigned ``PUT`` URL; with ``content_length`` the length is a signed header, so the server
    refuses (403) a body of any other size. The SDK's presign signs only ``host``, hence our own."""
    url = urlsplit(endpoint)
    amz_date = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    headers = {"host": url.netloc}
    if content_length is not None:
        headers["content-length"] = str(content_length)
    signed = ";".join(sorted(headers))
    path = f"{url.path.rstrip('/')}/{bucket}/{_uri_encode(key, safe='/-_.~')}"
    query = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256",
             "X-Amz-Credential": f"{access_key}/{amz_date[:8]}/{region}/s3/aws4_request",
             "X-Amz-Date": amz_date, "X-Amz-Expires": str(expires), "X-Amz-SignedHeaders": signed}
    canonical_query = "&".join(f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted(query.items()))
    canonical = "\n".join(["PUT", path, canonical_query, *(f"{k}:{headers[k]}" for k in sorted(headers)), "",
                           signed, "UNSIGNED-PAYLOAD"])
    signature = sigv4_signature(secret_key, amz_date, region, "s3", canonical)
    return f"{url.scheme}://{url.netloc}{path}?{canonical_query}&X-Amz-Signature={signature}"


def http_client(s: S3Settings) -> urllib3.PoolManager:
    """The SDK's HTTP client with our timeouts and a bounded retry (its default waits 5 minutes)."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=s.connect_timeout, read=s.read_timeout),
        maxsize=10,
        retries=urllib3.Retry(total=s.retries, connect=s.retries, read=s.retries, backoff_factor=0.2,
                              status_forcelist=(500, 502, 503, 504), raise_on_status=False),
    )


def _client(endpoint: str, s: S3Settings) -> Minio:
    url = urlsplit(endpoint)
    return Minio(
        url.netloc,
        access_key=s.access_key,
        secret_key=s.secret_key,
        secure=url.scheme == "https",
        region=s.region,
        http_client=http_client(s),
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
        """Create the bucket and expire every image after the retention (whole days, S3's unit).
        Needs the admin's keys: bootstrap calls it, no service does."""

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
        """The server answers and accepts our keys. A service may not list or head the bucket, so this
        reads a key nobody writes: "no such key" or "access denied" both come from a server that
        verified our signature; a wrong key, a missing bucket or no answer raise ``StorageError``."""

        def probe() -> None:
            try:
                self._client.get_object(self.bucket, _PROBE_KEY).close()
            except S3Error as e:
                if e.code not in ("NoSuchKey", "AccessDenied"):
                    raise

        await self._run(probe)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        await self._run(self._client.put_object, self.bucket, key, io.BytesIO(data), len(data),
                        content_type=content_type, key=key)

    async def put_stream(self, key: str, stream: BinaryIO, size: int, content_type: str) -> None:
        await self._run(self._client.put_object, self.bucket, key, stream, size,
                        content_type=content_type, key=key)

    async def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes; with ``max_bytes``, a larger object raises ``ObjectTooLarge`` from its
        declared length, before any of it is read (and a body longer than declared is cut off)."""

        def read() -> bytes:
            resp = self._client.get_object(self.bucket, key)
            try:
                if max_bytes is None:
                    return resp.read()
                declared = resp.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise ObjectTooLarge(key, int(declared), max_bytes)
                data = resp.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise ObjectTooLarge(key, None, max_bytes)
                return data
            finally:
                resp.close()
                resp.release_conn()

        return await self._run(read, key=key)

    async def stat(self, key: str) -> ObjectInfo:
        st = await self._run(self._client.stat_object, self.bucket, key, key=key)
        return ObjectInfo(key=key, size=st.size or 0, content_type=st.content_type, modified=st.last_modified)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix`` (the edge may list ``uploads/`` only: its staging janitor)."""

        def listing() -> list[ObjectInfo]:
            return [ObjectInfo(key=o.object_name or "", size=o.size or 0, content_type=None, modified=o.last_modified)
                    for o in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
                    if o.object_name and not o.is_dir]

        return await self._run(listing, key=prefix)

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

    async def presigned_put(self, key: str, expires: timedelta, *, content_length: int | None = None) -> str:
        """A URL to ``PUT`` one object; with ``content_length``, a body of any other size is refused."""
        s = self.settings
        if not s.access_key or not s.secret_key:
            raise StorageError("presigned URLs need S3 keys (S3_ACCESS_KEY, S3_SECRET_KEY)", key=key)
        return presign_put_url(s.public_endpoint or s.endpoint, self.bucket, key, access_key=s.access_key,
                               secret_key=s.secret_key, region=s.region, expires=int(expires.total_seconds()),
                               content_length=content_length)

    async def presigned_get(self, key: str, expires: timedelta, filename: str | None = None) -> str:
        headers = {"response-content-disposition": f'attachment; filename="{filename}"'} if filename else None
        return await self._run(self._public.presigned_get_object, self.bucket, key, expires=expires,
                               response_headers=headers, key=key)

    async def remove(self, key: str) -> None:
        await self._run(self._client.remove_object, self.bucket, key, key=key)
