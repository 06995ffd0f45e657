"""Uses: holding one enhancement for a task before the edge queues it, and giving it back if it never runs.

Credits only move through the ledger's projection of ``use_reserved`` (decided here), the enhancer's
``completed``/``failed`` facts, ``use_released`` and the order facts. Why a reservation fact rather than
counting in-flight tasks at the edge: the decision (unlimited, free or credit) is made once, by the one
process that holds the balances, and written to the stream before the task is queued, so concurrent uploads
cannot both take the last use, and a replay charges exactly what was decided even if the free quota is
reconfigured later. A reservation is keyed by its task, so the edge retrying the same task gets the same use.
"""

from __future__ import annotations

import logging
import time

from bus import texts
from bus.billing import (
    RELEASED,
    RESERVED,
    USE_CREDIT,
    USE_FREE,
    USE_UNLIMITED,
    UseReleased,
    UseReleaseRequest,
    UseReply,
    UseRequest,
    UseReserved,
)

from .errors import BillingError
from .facts import Facts
from .ledger import Ledger, china_day
from .settings import BillingSettings
from .shared import Balances
from .signin import Sessions

log = logging.getLogger(__name__)


class Uses:
    def __init__(self, settings: BillingSettings, ledger: Ledger, facts: Facts, sessions: Sessions,
                 balances: Balances) -> None:
        self.settings = settings
        self.ledger = ledger
        self.facts = facts
        self.sessions = sessions
        self.balances = balances

    async def reserve(self, req: UseRequest) -> UseReply:
        """Hold one use for a task about to be queued: unlimited, else today's free quota, else a credit.

        Decided and recorded (``use_reserved`` on the stream) under the balance lock, counting uses held by
        tasks still running, so concurrent uploads cannot spend the same last use twice."""
        anonymous = not req.token
        openid = f"anon:{req.client[:64]}" if anonymous else self.sessions.openid(req.token)
        async with self.balances:
            held = await self.ledger.use(req.task_id)
            if held is not None:  # the edge retried the same task
                if held.openid != openid:
                    raise BillingError(409, texts.BILLING_TASK_NOT_YOURS())
                return UseReply(openid=openid, task_id=req.task_id, use=held.use, status=held.status)
            now = time.time()
            use = await (self._anonymous_funding(openid, now) if anonymous else self._funding(openid, now))
            await self.facts.record(UseReserved(openid=openid, task_id=req.task_id, use=use, at=now))
        log.info("task %s: one %s use reserved for %s", req.task_id, use, openid)
        return UseReply(openid=openid, task_id=req.task_id, use=use, status=RESERVED)

    async def _funding(self, openid: str, now: float) -> str:
        account = await self.ledger.account(openid)
        if account.unlimited_until > now:
            return USE_UNLIMITED
        if await self.ledger.free_used(openid, china_day(now)) < self.settings.free_daily:
            return USE_FREE
        if account.credits - await self.ledger.held(openid, now - self.settings.reservation_hold) > 0:
            return USE_CREDIT
        free = self.settings.free_daily
        raise BillingError(402, texts.BILLING_NO_USES_LEFT_TODAY(free=free) if free else texts.BILLING_NO_USES_LEFT())

    async def _anonymous_funding(self, visitor: str, now: float) -> str:
        """A web visitor has a daily quota of free uses, counted like a user's (a failed task gives one back)."""
        limit = self.settings.anonymous_daily
        if limit and await self.ledger.free_used(visitor, china_day(now)) >= limit:
            raise BillingError(402, texts.BILLING_VISITOR_QUOTA(limit=limit))
        return USE_FREE

    async def release(self, req: UseReleaseRequest) -> UseReply:
        """Give back the use of a task the edge could not queue (only a still-reserved one changes)."""
        held = await self.ledger.use(req.task_id)
        if held is None or held.openid != req.openid:
            raise BillingError(404, texts.BILLING_NO_USE_RESERVED())
        if held.status == RESERVED:
            await self.facts.record(UseReleased(openid=req.openid, task_id=req.task_id, at=time.time(),
                                                reason=req.reason[:200]))
            log.info("task %s: use released (%s)", req.task_id, req.reason[:200])
        return UseReply(openid=req.openid, task_id=req.task_id, use=held.use,
                        status=RELEASED if held.status == RESERVED else held.status)
