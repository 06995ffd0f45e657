"""Bounds on what clients hold open: admission by kind of request, and no waiting on a client that stalls.

Rate limits (``ratelimit.py``) bound how often a client may ask; this bounds how much it may hold at
once. Every request that can stay open, or that a flood could pile up, is admitted into one of four pools,
each counted per client address and in total:

- ``streams``: server-sent event streams and the mini-program's synchronous result wait (minutes each);
- ``downloads``: result downloads (large bodies, as slow as the client reads);
- ``reads``: status polls and the other API reads (each a round trip to the bus);
- ``uploads``: photo uploads and presigned-upload requests.

Past a client's share the answer is 429, past the total 503, both with ``Retry-After`` and a sentence.
The pools are separate on purpose: a flood of status polls or event streams fills its own pool and is
shed there, while uploads keep an admission of their own that polls and streams cannot use up. (A
single connection cap, such as uvicorn's ``limit_concurrency``, would let the flood starve uploads.)
Operators' routes (``/health``, ``/metrics``), the web page's files and payment notifies are not pooled.

Every response also has ``send_timeout`` seconds per write: uvicorn's ``send`` waits while the socket
is full, so a client that stops reading would otherwise hold its connection, its pool place and (for a
stream) its NATS subscription forever. Such a client is dropped.

Counts live in this edge's memory; with several edges behind one address each bounds its own share.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bus.settings import SettingsError, env_float, env_int
from bus.texts import Said, Text, render

from . import texts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """What clients may hold open (``EDGE_*`` settings); see the module's docstring for why."""

    #: Event streams and synchronous result waits open at once: per client address, in total.
    streams_per_client: int = 20
    streams: int = 500
    #: Downloads in progress.
    downloads_per_client: int = 10
    downloads: int = 200
    #: Status polls and other API reads in progress.
    reads_per_client: int = 20
    reads: int = 200
    #: Uploads in progress (their own admission: reads and streams cannot use it up).
    uploads_per_client: int = 8
    uploads: int = 64
    #: An event stream ends after this many seconds; the browser reconnects and gets the current status first.
    stream_seconds: float = 1800.0
    #: Seconds one write may wait for a client that stopped reading before the connection is dropped.
    send_timeout: float = 30.0
    #: Seconds an upload's body may stall (no data at all) before it is refused with 408.
    body_timeout: float = 30.0
    #: Seconds a connection has to send its request line and headers (a slow-header client is closed).
    header_timeout: float = 10.0
    #: Seconds an idle keep-alive connection stays open (above clients' own idle reuse, so none races a close).
    keep_alive: float = 75.0

    def __post_init__(self) -> None:
        for name in ("streams", "downloads", "reads", "uploads"):
            per_client, total = getattr(self, f"{name}_per_client"), getattr(self, name)
            if not 1 <= per_client <= total:
                raise SettingsError(f"EDGE_{name.upper()}_PER_CLIENT must be at least 1 and at most EDGE_"
                                    f"{name.upper()} ({per_client} and {total} given)")
        for name in ("stream_seconds", "send_timeout", "body_timeout", "header_timeout", "keep_alive"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"EDGE_{name.upper()} must be a positive number of seconds")

    @classmethod
    def from_env(cls) -> ConnectionLimits:
        d = cls()
        return cls(**{
            name: (env_int if isinstance(getattr(d, name), int) else env_float)(f"EDGE_{name.upper()}",
                                                                                 getattr(d, name))
            for name in d.__dataclass_fields__
        })

    def pools(self) -> list[Pool]:
        return [
            Pool("streams", texts.POOL_STREAMS, self.streams_per_client, self.streams, 10),
            Pool("downloads", texts.POOL_DOWNLOADS, self.downloads_per_client, self.downloads, 5),
            Pool("reads", texts.POOL_READS, self.reads_per_client, self.reads, 2),
            Pool("uploads", texts.POOL_UPLOADS, self.uploads_per_client, self.uploads, 5),
        ]


def pool_name(method: str, path: str) -> str | None:
    """Which pool a request is admitted into; None for the routes that are not pooled."""
    path = path.rstrip("/")
    if method == "GET" or method == "HEAD":
        if path.startswith("/api/v1/events/"):
            return "streams"
        if path.startswith("/api/v1/download/"):
            return "downloads"
        if path in ("/api/v1/health", "/health", "/metrics"):
            return None  # the operators' view must answer during a flood
        if path.startswith(("/api/", "/webhook/")):
            return "reads"
        return None  # the web page's files
    if method == "POST":
        if path == "/api/v1/single-process-uploaded-image":
            return "streams"
        if path in ("/api/v1/enhance", "/api/v1/upload/presigned-url"):
            return "uploads"
    return None


@dataclass
class Pool:
    """Requests of one kind open at once, per client address and in total."""

    name: str
    #: What the pool holds, in the sentence a refused client reads.
    what: Text
    per_client: int
    total: int
    #: Seconds a refused client is told to wait.
    retry_after: int
    open: int = 0
    by_client: dict[str, int] = field(default_factory=dict)

    def admit(self, client: str) -> tuple[int, Said] | None:
        """Take a place for ``client``; or the status and sentence of the refusal."""
        held = self.by_client.get(client, 0)
        if held >= self.per_client:
            return 429, texts.TOO_MANY_OPEN_HERE(what=self.what(), limit=self.per_client, seconds=self.retry_after)
        if self.open >= self.total:
            return 503, texts.TOO_MANY_OPEN(what=self.what(), seconds=self.retry_after)
        self.by_client[client] = held + 1
        self.open += 1
        return None

    def release(self, client: str) -> None:
        self.open -= 1
        held = self.by_client[client] - 1
        if held:
            self.by_client[client] = held
        else:
            del self.by_client[client]  # memory stays bounded by what is open


class ClientStalled(Exception):
    """The client has not taken a write for ``send_timeout`` seconds."""


class ConnectionLimitMiddleware:
    """Admits pooled requests (429/503 past the limits) and drops clients that stop reading."""

    def __init__(self, app: ASGIApp, *, limits: ConnectionLimits) -> None:
        from .deps import client_address  # here: deps → resources → settings, which imports this module

        self.app = app
        self.limits = limits
        self.pools = {pool.name: pool for pool in limits.pools()}
        #: The same address as the routes see (uvicorn resolves X-Forwarded-For from trusted proxies).
        self._address: Callable[[Request], str] = client_address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = pool_name(scope["method"], scope["path"])
        pool = self.pools[name] if name else None
        client = self._address(Request(scope))
        timeout = self.limits.send_timeout

        async def timed_send(message: Message) -> None:
            try:
                async with asyncio.timeout(timeout):
                    await send(message)
            except TimeoutError:
                raise ClientStalled from None

        refusal = pool.admit(client) if pool is not None else None
        try:
            if pool is not None and refusal is not None:
                await _refuse(timed_send, refusal[0], render(refusal[1], texts.scope_language(scope)), pool.retry_after)
            else:
                await self.app(scope, receive, timed_send)
        except (ClientStalled, BaseExceptionGroup) as e:  # a streaming response's task group wraps it in a group
            if isinstance(e, BaseExceptionGroup) and e.split(ClientStalled)[1] is not None:
                raise
            # Returning without finishing the response makes the server close the connection.
            log.info("dropped %s %s from %s: the client took nothing for %g s", scope["method"], scope["path"],
                     client, timeout)
        finally:
            if pool is not None and refusal is None:
                pool.release(client)


async def _refuse(send: Send, status: int, message: str, retry_after: int) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode())]})
    await send({"type": "http.response.body", "body": body})
