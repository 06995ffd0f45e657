"""A hard limit on request bodies, enforced while the body streams in.

The multipart parser would otherwise spool an arbitrarily large upload to disk before any
handler could look at its size; here a declared ``Content-Length`` over the limit is refused
before reading, and an undeclared (chunked) body is cut off the moment it crosses the limit.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """An HTTPException, so that FastAPI's body parsing passes it on instead of calling it a 400."""

    def __init__(self, limit_mb: float) -> None:
        super().__init__(413, f"The upload is too large. The maximum size is {limit_mb:g} MB.")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, slack: int = 64 * 1024) -> None:
        self.app = app
        # Multipart framing adds a little around the file itself.
        self.max_bytes = max_bytes + slack
        self.limit_mb = max_bytes / (1024 * 1024)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": f"The upload is too large. The maximum size is {self.limit_mb:g} MB."}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.limit_mb)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)
