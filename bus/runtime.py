"""Running a service process until SIGTERM/SIGINT, then letting it drain."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def run_until_signal(serve: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``serve(stop)``; the first SIGTERM or SIGINT sets ``stop`` and ``serve`` drains and returns."""

    async def run() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await serve(stop)

    return asyncio.run(run())
