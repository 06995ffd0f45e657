"""A service's clean shutdown over TLS says nothing alarming: nats-py's TLS transport makes asyncio log a
warning ("returning true from eof_received() has no effect when using ssl", nats-io/nats.py#574) at every
close, which `make run` printed three times at each Ctrl-C; ``bus.connection`` drops exactly that line."""

from __future__ import annotations

import logging

import pytest

from bus.connection import connect
from bus.settings import NatsSettings
from photoenhance.servers import EmbeddedNats


async def test_closing_a_tls_connection_logs_no_warning(nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in nats_server.env_for("quiet-edge", "edge").items():
        monkeypatch.setenv(name, value)
    settings = NatsSettings.from_env("edge")
    assert settings.ca is not None  # over TLS, as every service connects
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        for _ in range(3):
            async with connect(settings, "quiet-edge") as nc:
                await nc.flush()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    logging.getLogger("asyncio").warning("something else")  # and only that line is dropped
    assert caplog.messages[-1] == "something else"
