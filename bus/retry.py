"""Riding out a moment without JetStream: a NATS node failing over, a reconnect, a leader election.

JetStream API calls then time out or answer 503 for a few seconds. Idempotent operations are
retried with back-off for a bounded time; past it the error surfaces as ``BusUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors that say "not now" rather than "no".
TRANSIENT: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    asyncio.TimeoutError,
)


class BusUnavailable(RuntimeError):
    """NATS/JetStream stayed unavailable for longer than we are willing to wait."""


async def retrying(op: Callable[[], Awaitable[T]], *, what: str, budget: float = 10.0, delay: float = 0.2) -> T:
    """Run ``op`` until it succeeds or ``budget`` seconds of transient failures have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    while True:
        try:
            return await op()
        except TRANSIENT as e:
            if loop.time() + delay > deadline:
                raise BusUnavailable(f"{what}: the message bus did not answer ({type(e).__name__})") from e
            log.info("%s: %s; retrying in %.1fs", what, type(e).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
