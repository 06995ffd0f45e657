"""A hard limit on request bodies, enforced while the body streams in.

The multipart parser would otherwise spool an arbitrarily large upload to disk before any
handler could look at its size; here a declared ``Content-Length`` over the limit is refused
before reading, and an undeclared (chunked) body is cut off the moment it crosses the limit.

A body that stops arriving is refused too (408 after ``body_timeout`` seconds without data): uvicorn has
no such timeout, and a client trickling nothing would otherwise hold its upload admission forever.
"""

from __future__ import annotations

import asyncio
import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bus.texts import Said, render

from .texts import UPLOAD_STALLED, UPLOAD_TOO_LARGE, scope_language


class BodyTooLarge(HTTPException):
    """An HTTPException, so that FastAPI's body parsing passes it on instead of calling it a 400."""

    def __init__(self, limit_mb: float) -> None:
        self.said = UPLOAD_TOO_LARGE(mb=limit_mb)
        super().__init__(413, str(self.said))


class BodyStalled(HTTPException):
    """An HTTPException for the same reason as :class:`BodyTooLarge`."""

    def __init__(self, seconds: float) -> None:
        self.said = UPLOAD_STALLED(seconds=seconds)
        super().__init__(408, str(self.said))


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, slack: int = 64 * 1024, body_timeout: float = 30.0) -> None:
        self.app = app
        # Multipart framing adds a little around the file itself.
        self.max_bytes = max_bytes + slack
        self.limit_mb = max_bytes / (1024 * 1024)
        self.body_timeout = body_timeout

    async def _refuse(self, scope: Scope, send: Send, status: int = 413, said: Said | None = None) -> None:
        message = render(said or UPLOAD_TOO_LARGE(mb=self.limit_mb), scope_language(scope))
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
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
                    await self._refuse(scope, send)
                    return
        received = 0
        started = False
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # past the body, receive() only waits for the client to disconnect: no timeout
                return await receive()
            try:
                async with asyncio.timeout(self.body_timeout):
                    message = await receive()
            except TimeoutError:
                raise BodyStalled(self.body_timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.limit_mb)
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (BodyTooLarge, BodyStalled) as e:  # raised outside FastAPI's handlers
            if not started:
                await self._refuse(scope, send, e.status_code, e.said)
