"""The billing process: the ledger follows ``PE_EVENTS``; the micro service answers the edge; the reconciler
finishes what a crash or a lost notify left undone (once the ledger has caught up, then periodically)."""

from __future__ import annotations

import asyncio
import logging
import sys
from contextlib import AsyncExitStack

from bus import connect
from bus.runtime import run_until_signal

from .endpoints import Endpoints, routes
from .facts import Facts
from .follower import follow, wait_for_stream
from .ledger import Ledger
from .reconciler import reconcile_periodically
from .rooms import Rooms
from .settings import BillingSettings
from .wechat import WeChat

log = logging.getLogger(__name__)


async def serve(settings: BillingSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set; then stop taking requests, finish those in flight, drain and close."""
    async with AsyncExitStack() as stack:
        ledger = await Ledger.open(settings.db_path)
        stack.push_async_callback(ledger.close)
        nc = await stack.enter_async_context(connect(settings.nats, "billing", stop=stop))
        js = nc.jetstream()
        await wait_for_stream(js)
        wechat = await stack.enter_async_context(WeChat(settings.wechat)) if settings.wechat else None
        if wechat is None:
            log.warning("WeChat is not configured (WECHAT_APPID unset): sign-in and payments answer 503")
        rooms = Rooms.open(settings, ledger, Facts(js, ledger), wechat)
        endpoints = Endpoints(nc, routes(rooms))
        caught_up = asyncio.Event()
        following = asyncio.create_task(follow(js, ledger, stop, caught_up))
        reconciling = asyncio.create_task(
            reconcile_periodically(rooms.reconciler, settings.reconcile_interval, stop, caught_up))
        await endpoints.start()
        log.info("billing ready")
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if following.done():
                following.result()  # the follower died: surface why
        finally:
            stop.set()
            stopping.cancel()
            log.info("billing stopping: answering the requests in hand (at most %.0f s)", settings.drain_timeout)
            await endpoints.stop(settings.drain_timeout)
            # A pass still talking to WeChat is cut short: every step it takes is re-derivable next start.
            if not (await asyncio.wait({reconciling}, timeout=settings.drain_timeout))[0]:
                reconciling.cancel()
            await asyncio.gather(following, reconciling, return_exceptions=True)
            log.info("billing stopped")


def main(argv: list[str] | None = None) -> None:
    """``billing`` serves; ``billing replay`` rebuilds the ledger from the stream (with billing stopped)."""
    settings = BillingSettings.from_env()
    if argv and argv[0] == "replay":
        from .replay import replay

        asyncio.run(replay(settings))
        return
    if argv:
        raise SystemExit(f"unknown billing command {argv[0]!r}; use 'replay' or nothing")

    if code := run_until_signal(lambda stop: serve(settings, stop)):
        sys.exit(code)
