"""Hung or hostile neighbours on the edge: what a client may hold open is bounded, per address and in total
(429/503 with Retry-After and a sentence); a flood of status polls or event streams cannot starve an upload;
a client that stops reading is dropped, an event stream ends after its lifetime, a stalled upload body is
refused, a slow-header connection is closed; a closed event stream leaves no NATS subscription behind.

The edge app runs in-process (its own limits, tiny ones where a test needs them) on the session's real
servers and enhancer. Requests are driven straight into the ASGI app where a test needs a client that
keeps a stream open or stops reading (httpx's ASGI transport reads every response to its end).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.types import Message

from bus.schemas import QUEUED, TaskState
from bus.tasks import new_task_id
from edge.app import create_app
from edge.connections import ConnectionLimitMiddleware, ConnectionLimits
from edge.main import server_options
from edge.resources import Resources
from edge.settings import EdgeSettings

from .support import Stack, encode, photo


def edge_settings(stack: Stack, monkeypatch: pytest.MonkeyPatch, **limits: Any) -> EdgeSettings:
    """The session edge's own settings (credentials, servers), with these connection limits."""
    with monkeypatch.context() as m:
        for name in [n for n in os.environ if n.startswith(("NATS_", "S3_", "EDGE_"))]:
            m.delenv(name)
        for name, value in stack.env("edge").items():
            m.setenv(name, value)
        settings = EdgeSettings.from_env()
    return replace(settings, connections=ConnectionLimits(**limits))


@asynccontextmanager
async def running(settings: EdgeSettings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def limiter(app: FastAPI) -> ConnectionLimitMiddleware:
    """The app's connection-limit middleware (built with the middleware stack on the first request)."""
    layer: Any = app.middleware_stack
    while not isinstance(layer, ConnectionLimitMiddleware):
        layer = layer.app
    return layer


def open_places(app: FastAPI) -> dict[str, int]:
    return {name: pool.open for name, pool in limiter(app).pools.items() if pool.open or pool.by_client}


class Call:
    """One request driven into the ASGI app as a server would, for a client that can keep it open.

    ``stall``: the kind of write (``http.response.start`` or ``http.response.body``) this client never
    takes: the write blocks, as uvicorn's does on a socket the client does not read, until it goes away.
    """

    def __init__(self, app: FastAPI, path: str, client: str, *, method: str = "GET", stall: str | None = None,
                 body: bytes = b"", more_body: bool = False, headers: list[tuple[bytes, bytes]] | None = None
                 ) -> None:
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.headers: dict[str, str] = {}
        self.body = b""
        self.complete = False
        self.gone = asyncio.Event()
        self._stall = stall
        self._request = [{"type": "http.request", "body": body, "more_body": more_body}]
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"edge"), *(headers or [])], "client": (client, 40000),
                 "server": ("edge", 80), "state": {}}
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> Message:
        if self._request:
            return self._request.pop()
        await self.gone.wait()  # a body with more_body=True that never comes, or waiting for the end
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if self.gone.is_set():
            return
        if message["type"] == "http.response.start":
            self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            self.status.set_result(message["status"])
        if message["type"] == self._stall:
            await self.gone.wait()
            return
        if message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            self.complete = not message.get("more_body", False)

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    async def close(self) -> None:
        """The client goes away; the app is done with the request soon after."""
        self.gone.set()
        await asyncio.wait_for(self.task, 30)


async def waiting_task(res: Resources) -> str:
    """A task that stays queued (no job behind it): its event stream stays open."""
    now = time.time()
    task_id = new_task_id()
    await res.tasks.create(TaskState(task_id=task_id, status=QUEUED, created_at=now, updated_at=now,
                                     input_key=f"inputs/{task_id}/w.jpg", input_name="w.jpg"))
    return task_id


async def subscriptions(stack: Stack, res: Resources) -> list[str]:
    """The edge connection's subscriptions, as the NATS server sees them."""
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{stack.nats.monitor_url}/connz", params={"cid": res.nc.client_id, "subs": 1})
    connections = r.json()["connections"]
    return list(connections[0].get("subscriptions_list") or []) if connections else []


async def settle(check: Any, what: str, timeout: float = 30) -> None:
    """Wait until ``await check()`` is true (things released after a response end a moment later)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def progress_subs(subs: list[str]) -> list[str]:
    return [s for s in subs if s.startswith("pe.progress.")]


async def test_streams_and_polls_are_bounded_and_cannot_starve_an_upload(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = edge_settings(stack, monkeypatch, streams_per_client=2, streams=3, reads_per_client=2, reads=4,
                             send_timeout=300)
    async with running(settings) as app:
        res: Resources = app.state.resources
        task_id = await waiting_task(res)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://edge") as warm:
            assert (await warm.get(f"/api/v1/status/{task_id}")).status_code == 200
        baseline = await subscriptions(stack, res)
        events = f"/api/v1/events/{task_id}"

        # Event streams: two for one address, a third from it refused (429), one more from another
        # address fills the total, and the next address is refused (503).
        a1, a2 = Call(app, events, "10.0.0.1"), Call(app, events, "10.0.0.1")
        assert [await a1.status, await a2.status] == [200, 200]
        a3 = Call(app, events, "10.0.0.1")
        assert await a3.status == 429
        await asyncio.wait_for(a3.task, 30)
        assert a3.headers["retry-after"] == "10"
        assert a3.json()["error"] == ("Too many event streams and result waits are open from your address "
                                      "(2 at most); close one or try again in 10 seconds.")
        b1 = Call(app, events, "10.0.0.2")
        assert await b1.status == 200
        c1 = Call(app, events, "10.0.0.3")
        assert await c1.status == 503
        await asyncio.wait_for(c1.task, 30)
        assert c1.headers["retry-after"] == "10"
        assert c1.json()["error"] == ("The service has too many event streams and result waits open right now; "
                                      "please try again in 10 seconds.")
        await settle(lambda: _count_progress(stack, res, 3), "one progress subscription per open stream")

        # Status polls whose clients do not read fill the reads pool; then a flood of polls from many
        # addresses, and an upload from yet another address in the middle of it.
        stalled = [Call(app, f"/api/v1/status/{task_id}", f"10.1.0.{i}", stall="http.response.start")
                   for i in range(4)]
        assert [await s.status for s in stalled] == [200] * 4
        assert open_places(app) == {"streams": 3, "reads": 4}

        async def poll(i: int) -> httpx.Response:
            transport = httpx.ASGITransport(app, client=(f"10.2.{i // 200}.{i % 200}", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
                return await client.get(f"/api/v1/status/{task_id}")

        async def upload() -> httpx.Response:
            transport = httpx.ASGITransport(app, client=("10.9.9.9", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://edge", timeout=60) as client:
                return await client.post("/api/v1/enhance?scale=2&quality_level=fast&face_enhance=false",
                                         files={"file": ("cat.jpg", encode(photo(size=(16, 16))), "image/jpeg")})

        flood = [poll(i) for i in range(300)]
        answers = await asyncio.gather(*flood[:150], upload(), *flood[150:])
        uploaded, polls = answers[150], answers[:150] + answers[151:]
        assert uploaded.status_code == 200, uploaded.text
        assert uploaded.json()["status"] == "queued"
        assert {r.status_code for r in polls} == {503}
        assert polls[0].headers["retry-after"] == "2"
        assert polls[0].json()["error"] == ("The service has too many status requests open right now; "
                                            "please try again in 2 seconds.")

        # Everything closes: every place is given back and every stream's subscription with it.
        for call in (a1, a2, b1, *stalled):
            await call.close()
        assert open_places(app) == {}
        await settle(lambda: _count_progress(stack, res, 0), "the streams' subscriptions to be released")
        await settle(lambda: _same(stack, res, baseline), "the edge's subscriptions to return to where they were")


async def _count_progress(stack: Stack, res: Resources, n: int) -> bool:
    return len(progress_subs(await subscriptions(stack, res))) == n


async def _same(stack: Stack, res: Resources, baseline: list[str]) -> bool:
    return sorted(await subscriptions(stack, res)) == sorted(baseline)


async def test_a_client_that_stops_reading_is_dropped_and_its_stream_released(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(edge_settings(stack, monkeypatch, send_timeout=0.5)) as app:
        res: Resources = app.state.resources
        task_id = await waiting_task(res)
        reader = Call(app, f"/api/v1/events/{task_id}", "10.3.0.1", stall="http.response.body")
        assert await reader.status == 200
        await asyncio.wait_for(reader.task, 60)  # the edge gave up on it: the client never went away itself
        assert not reader.gone.is_set() and not reader.complete and reader.body == b""
        assert open_places(app) == {}
        await settle(lambda: _count_progress(stack, res, 0), "the dropped stream's subscription to be released")


async def test_an_event_stream_ends_after_its_lifetime(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(edge_settings(stack, monkeypatch, stream_seconds=1)) as app:
        res: Resources = app.state.resources
        task_id = await waiting_task(res)
        stream = Call(app, f"/api/v1/events/{task_id}", "10.4.0.1")
        assert await stream.status == 200
        await asyncio.wait_for(stream.task, 60)
        assert stream.complete and b"event: status" in stream.body and b'"status":"queued"' in stream.body
        assert open_places(app) == {}
        await settle(lambda: _count_progress(stack, res, 0), "the ended stream's subscription to be released")


async def test_an_upload_whose_body_stalls_is_refused(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(edge_settings(stack, monkeypatch, body_timeout=0.5)) as app:
        boundary = "b0undary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jpg\"\r\n"
                "Content-Type: image/jpeg\r\n\r\n").encode() + b"\xff\xd8" + b"\0" * 1000
        upload = Call(app, "/api/v1/enhance", "10.5.0.1", method="POST", body=head, more_body=True, headers=[
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            (b"content-length", b"100000")])
        assert await upload.status == 408
        await asyncio.wait_for(upload.task, 30)
        assert upload.json()["error"] == "The upload stalled: no data arrived for 0.5 seconds. Please try again."
        assert open_places(app) == {}


async def test_a_connection_that_trickles_its_headers_is_closed() -> None:
    """uvicorn alone would hold it forever (it has no header timeout); a kept-alive idle one stays."""
    from bus.settings import NatsSettings, S3Settings, TaskSettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = EdgeSettings(nats=NatsSettings(), s3=S3Settings(), tasks=TaskSettings(), port=port,
                            connections=ConnectionLimits(header_timeout=0.5, keep_alive=60))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", **{**server_options(settings), "log_level": "warning"}))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the server did not start"
            await asyncio.sleep(0.02)
        # A request answered, then idle longer than the header timeout: still usable (keep-alive rules).
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"ok"), 30)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(1.0)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"ok"), 30)).startswith(b"HTTP/1.1 200")
        writer.close()

        # A header line every 0.1 s, never the end of the head: closed although it keeps sending.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:
            for i in range(3000):
                writer.write(f"X-Slow-{i}: 1\r\n".encode())
                await asyncio.sleep(0.1)

        trickling = asyncio.create_task(trickle())
        try:
            assert await asyncio.wait_for(reader.read(), 60) == b"", "the server answered a head never finished"
        finally:
            trickling.cancel()
            writer.close()
    finally:
        server.should_exit = True
        await serving


def test_connection_limits_come_from_the_environment_and_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from bus.settings import SettingsError

    monkeypatch.setenv("EDGE_STREAMS_PER_CLIENT", "3")
    monkeypatch.setenv("EDGE_STREAM_SECONDS", "90")
    limits = ConnectionLimits.from_env()
    assert (limits.streams_per_client, limits.streams, limits.stream_seconds) == (3, 500, 90.0)
    monkeypatch.setenv("EDGE_STREAMS_PER_CLIENT", "600")
    with pytest.raises(SettingsError, match="EDGE_STREAMS_PER_CLIENT"):
        ConnectionLimits.from_env()
    monkeypatch.setenv("EDGE_STREAMS_PER_CLIENT", "3")
    monkeypatch.setenv("EDGE_SEND_TIMEOUT", "0")
    with pytest.raises(SettingsError, match="EDGE_SEND_TIMEOUT"):
        ConnectionLimits.from_env()
