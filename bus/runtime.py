"""Running a service process until SIGTERM/SIGINT, then letting it drain."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from .connection import REFUSED_EXIT, CredentialRefused, StoppedWhileConnecting

log = logging.getLogger(__name__)


def run_until_signal(serve: Callable[[asyncio.Event], Awaitable[Any]]) -> int:
    """Run ``serve(stop)``; the first SIGTERM or SIGINT sets ``stop`` and ``serve`` drains and returns.

    Returns the process's exit status: 0, also when stopped before the bus answered; :data:`REFUSED_EXIT` when the
    bus refused the service's credential (said in one line, no traceback: it is an operator's to fix)."""

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    try:
        asyncio.run(run())
    except StoppedWhileConnecting as e:
        log.info("%s", e)
    except CredentialRefused as e:
        log.error("%s", e)
        return REFUSED_EXIT
    return 0
