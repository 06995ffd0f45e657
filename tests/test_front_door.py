"""Behind the compose front door (a TLS reverse proxy), every visitor is themself: the edge takes the client
address from X-Forwarded-For only when the request comes from a trusted proxy, so a forged header from
anyone else changes nothing, and per-client limits count real clients."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from bus.settings import NatsSettings, S3Settings, SettingsError, TaskSettings
from edge.app import create_app
from edge.settings import EdgeSettings
from photoenhance.servers import find_binary, free_port

from .support import ROOT, wait_until

PROXY = "172.31.250.2"
CADDYFILE = ROOT / "edge" / "Caddyfile"


def edge(**kw: Any) -> FastAPI:
    """One app for every call (its limits are in its memory); each call says which address it comes from."""
    settings = EdgeSettings(nats=NatsSettings(), s3=S3Settings(), tasks=TaskSettings(), rate_account="2/60", **kw)
    return create_app(settings)


async def sign_in(app: FastAPI, peer: str, forwarded: str | None = None) -> int:
    """A sign-in attempt (rate-limited per client) arriving from ``peer``; no lifespan, so the limiter alone
    decides whether it gets through (429) or on to the route (which then fails for want of a bus)."""
    transport = httpx.ASGITransport(app, client=(peer, 40000), raise_app_exceptions=False)
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        r = await client.post("/api/wechat/auth/openid", json={"code": "x"}, headers=headers)
    return r.status_code


async def test_an_unexpected_error_is_answered_inside_the_app_and_the_connection_lives_on() -> None:
    """The route fails here for want of a bus: a 500 in words, and the error does not reach the server (this
    transport would raise it), which would close the connection at once: a proxy reading the 500 then met a reset
    (through Caddy, a response cut off after its headers; before that, a 502 for the next visitor)."""
    transport = httpx.ASGITransport(edge(), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        r = await client.post("/api/wechat/auth/openid", json={"code": "x"})
    assert r.status_code == 500 and r.headers.get("connection") != "close"
    assert "the operators can find the details in the edge's log" in r.json()["error"]


async def test_the_proxy_names_each_client_and_each_has_its_own_limit() -> None:
    app = edge(trusted_proxies=(PROXY,))
    alice = [await sign_in(app, PROXY, "203.0.113.7") for _ in range(3)]
    assert alice[:2] != [429, 429] and alice[2] == 429
    # Another visitor through the same proxy is not refused for Alice's attempts ...
    assert await sign_in(app, PROXY, "198.51.100.20") != 429
    # ... and a client-supplied entry left of the proxy's own is not believed: Caddy appends the real peer.
    assert await sign_in(app, PROXY, "198.51.100.20, 203.0.113.99") != 429
    assert await sign_in(app, PROXY, "203.0.113.99, 203.0.113.7") == 429


async def test_a_forged_header_from_anyone_else_is_ignored() -> None:
    app = edge(trusted_proxies=(PROXY,))
    codes = [await sign_in(app, "192.0.2.50", f"203.0.113.{i}") for i in range(3)]
    assert codes[2] == 429  # three "different" clients are one client, at one address


async def test_without_trusted_proxies_nobody_may_name_a_client() -> None:
    app = edge()
    codes = [await sign_in(app, "127.0.0.1", f"203.0.113.{i}") for i in range(3)]
    assert codes[2] == 429


async def test_a_trusted_network_may_be_given() -> None:
    app = edge(trusted_proxies=("172.31.250.0/24",))
    codes = [await sign_in(app, "172.31.250.9", f"203.0.113.{i}") for i in range(3)]
    assert 429 not in codes


def test_trusted_proxies_come_from_the_environment_and_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TRUSTED_PROXIES", "172.31.250.2, 10.0.0.0/8")
    assert EdgeSettings.from_env().trusted_proxies == ("172.31.250.2", "10.0.0.0/8")
    monkeypatch.setenv("EDGE_TRUSTED_PROXIES", "proxy.example")
    with pytest.raises(SettingsError, match="EDGE_TRUSTED_PROXIES"):
        EdgeSettings.from_env()


@contextmanager
def edge_server(app: FastAPI) -> Iterator[str]:
    """The app served by uvicorn on 127.0.0.1 (no lifespan: the limiter answers before any route needs the bus)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off",
                                           log_level="warning", proxy_headers=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "the edge to listen")
    try:
        yield f"127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def front_door(upstream: str, tmp_path: Path) -> Iterator[str]:
    """Caddy with the compose stack's own Caddyfile (plain HTTP here: the TLS part is Caddy's own)."""
    port = free_port()
    env = {**os.environ, "PROXY_BIND": "127.0.0.1", "SITE_ADDRESS": f"http://127.0.0.1:{port}",
           "S3_SITE_ADDRESS": f"http://127.0.0.1:{free_port()}", "EDGE_UPSTREAM": upstream,
           "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)}
    log = (tmp_path / "caddy.log").open("wb")
    proc = subprocess.Popen([find_binary("caddy"), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def listening() -> bool:
            assert proc.poll() is None, (tmp_path / "caddy.log").read_text()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_until(listening, 15, "caddy to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def sign_in_from(source: str, url: str, forwarded: str | None = None) -> int:
    """A sign-in attempt from the loopback address ``source`` (127.0.0.x: each one another client)."""
    transport = httpx.HTTPTransport(local_address=source)
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.post(f"{url}/api/wechat/auth/openid", json={"code": "x"}, headers=headers).status_code


def test_through_caddy_each_visitor_is_counted_as_themself(tmp_path: Path) -> None:
    """The real proxy with our Caddyfile in front of the edge (which trusts only the proxy, 127.0.0.1):
    visitors at 127.0.0.2 and 127.0.0.3 have limits of their own, and a forged header changes nothing."""
    app = edge(trusted_proxies=("127.0.0.1",))
    with edge_server(app) as upstream, front_door(upstream, tmp_path) as url:
        first = [sign_in_from("127.0.0.2", url, forwarded=f"203.0.113.{i}") for i in range(3)]
        assert 429 not in first[:2] and first[2] == 429, first  # forged addresses did not split the limit
        assert sign_in_from("127.0.0.3", url) != 429  # another visitor is not refused for the first one
        # Straight to the edge, not through the proxy, the forged header is ignored as well.
        assert sign_in_from("127.0.0.3", f"http://{upstream}", forwarded="203.0.113.50") != 429
        assert sign_in_from("127.0.0.3", f"http://{upstream}", forwarded="203.0.113.51") == 429
