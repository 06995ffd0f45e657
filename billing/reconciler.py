"""The reconciler: finishes what a crash or a lost notify left undone (at start-up, then every
``reconcile_interval``).

Every multi-fact step of ``Orders`` and ``Refunds`` is re-derivable from the ledger, so billing stopping
between two facts loses nothing: the retried request, a redelivered notify or a reconciler pass records
what is missing, and only that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from contextlib import suppress

from .errors import BillingError
from .ledger import Ledger
from .orders import Orders
from .refunds import Refunds
from .settings import BillingSettings

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, settings: BillingSettings, ledger: Ledger, orders: Orders, refunds: Refunds,
                 with_wechat: bool) -> None:
        self.settings = settings
        self.ledger = ledger
        self.orders = orders
        self.refunds = refunds
        self.with_wechat = with_wechat

    async def reconcile(self, now: float | None = None) -> None:
        """Finish what a crash or a lost notify left undone; safe at any time and as often as wanted.

        Paid orders whose credits were not granted are granted, refunded orders whose credits were not revoked
        are revoked (no WeChat needed for either). With WeChat: refunds and pending orders older than one
        ``reconcile_interval`` (their notify is overdue) are asked about: a refund WeChat never received is
        asked again, a successful one applied; a paid order is settled, an order WeChat closed is recorded
        closed, an unpaid one past its expiry is closed."""
        now = time.time() if now is None else now
        await self.orders.grant_missing(now)
        await self.refunds.revoke_missing()
        if not self.with_wechat:
            return
        overdue = now - self.settings.reconcile_interval
        for known in await self.ledger.refunds_processing(overdue):
            await _step(f"refund {known.out_refund_no}", self.refunds.reconcile(known))
        for order in await self.ledger.orders_pending(overdue):
            await _step(f"order {order.out_trade_no}", self.orders.reconcile(order, now))


async def _step(what: str, step: Awaitable[None]) -> None:
    """One item's reconciliation; a refusal (WeChat away, a mismatch) is logged and retried next pass."""
    try:
        await step
    except BillingError as e:
        log.warning("reconciling %s: %s (%s); trying again next pass", what, e.message, e.status)


async def reconcile_periodically(reconciler: Reconciler, interval: float, stop: asyncio.Event,
                                 caught_up: asyncio.Event) -> None:
    """``reconciler.reconcile()`` every ``interval`` seconds until ``stop``; the first pass waits until the ledger
    holds every fact already in the stream, so it never redoes a step whose fact is stored but not yet applied."""
    waiting = {asyncio.ensure_future(caught_up.wait()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiting:
            task.cancel()
    while not stop.is_set():
        try:
            await reconciler.reconcile()
        except Exception:
            log.exception("reconciling failed; trying again in %.0f s", interval)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
