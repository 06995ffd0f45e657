"""Entry point of ``photoenhance edge``, and how its HTTP server treats slow clients.

uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``) and the size of a request head
being parsed (``h11_max_incomplete_event_size``; httptools has its own cap), but not the *time* a client
takes to send its request line and headers: a client that trickles a header byte now and then would hold
its connection forever. :func:`header_deadline_protocol` closes such a connection after
``EDGE_HEADER_TIMEOUT`` seconds. Bodies that stall (``limits.py``), responses nobody reads and how many
requests of each kind may be open (``connections.py``) are bounded in the app.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import uvicorn

from .app import create_app
from .settings import EdgeSettings

log = logging.getLogger(__name__)

#: Largest request line and headers accepted, in bytes (h11; beyond it the request is refused with 400).
MAX_HEAD_BYTES = 16 * 1024


def header_deadline_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools, or h11 without it), closing a connection whose request line
    and headers are not complete ``seconds`` after the connection opened or its next request began."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderDeadline(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_request():
                self._disarm()
            elif self._header_timer is None:  # the first bytes of a next request on a kept-alive connection
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _in_request(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _arm(self) -> None:
            if not self.transport.is_closing():
                self._header_timer = self.loop.call_later(seconds, self._deadline)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _deadline(self) -> None:
            self._header_timer = None
            if not self._in_request() and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


def server_options(settings: EdgeSettings) -> dict[str, Any]:
    """``uvicorn.run`` / ``uvicorn.Config`` keyword arguments (besides the app)."""
    limits = settings.connections
    # Keep-alive longer than clients' idle reuse (httpx, browsers): the server must not close a
    # connection just as a client sends on it. (uvicorn re-raises SIGTERM after draining: exit 143.)
    # No ``limit_concurrency``: one cap on every connection would let a flood of polls starve uploads;
    # the app admits each kind of request separately (connections.py).
    # ``proxy_headers`` off: the app itself trusts X-Forwarded-For from EDGE_TRUSTED_PROXIES only (app.py),
    # where uvicorn would trust it from 127.0.0.1 (FORWARDED_ALLOW_IPS), i.e. from anyone on this host.
    return {"host": settings.host, "port": settings.port, "proxy_headers": False, "timeout_graceful_shutdown": 30,
            "timeout_keep_alive": limits.keep_alive, "http": header_deadline_protocol(limits.header_timeout),
            "h11_max_incomplete_event_size": MAX_HEAD_BYTES, "log_level": "info"}


def fit_open_files(settings: EdgeSettings) -> None:
    """Every admitted request holds a socket: raise the soft open-files limit (often 1024) to fit them all,
    plus room for idle keep-alive connections, the bus and storage, within the hard limit."""
    c = settings.connections
    need = c.streams + c.downloads + c.reads + c.uploads + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    new = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    if new < need:
        log.warning("open files are limited to %d; the connection limits may need %d", new, need)


def main() -> None:
    settings = EdgeSettings.from_env()
    fit_open_files(settings)
    uvicorn.run(create_app(settings), **server_options(settings))
