"""Refunds: a full refund of a paid order (the edge checked the admin token), its notify, and reconciliation.

Money only goes back through ``Refunds.apply``, which records ``order_refunded`` and ``credits_revoked`` once
per order, however many notifies report it at once. The refund itself (``refund_requested``) is recorded
before WeChat is asked, so every refund notify names a refund billing knows, and asking again re-sends the
same refund (idempotent at WeChat by ``out_refund_no``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bus import texts
from bus.billing import (
    PAID,
    REFUNDED,
    CreditsRevoked,
    NotifyReply,
    NotifyRequest,
    OrderRefunded,
    RefundReply,
    RefundRequest,
    RefundRequested,
)

from .errors import BillingError, NotifyRejected
from .facts import Facts
from .ledger import Ledger, Order, RefundRecord
from .notify import SUCCESS, check_refund, parse_refund, parse_refund_query
from .settings import BillingSettings
from .shared import Balances, need_wechat, open_notify
from .wechat import WeChat

log = logging.getLogger(__name__)

REFUND_EVENT = "REFUND.SUCCESS"
#: Refund notifies that report a refund that did not happen; accepted (so WeChat stops) and not applied.
REFUND_FAILURES = ("REFUND.ABNORMAL", "REFUND.CLOSED")


class Refunds:
    def __init__(self, settings: BillingSettings, ledger: Ledger, facts: Facts, wechat: WeChat | None,
                 balances: Balances) -> None:
        self.settings = settings
        self.ledger = ledger
        self.facts = facts
        self._wechat = wechat
        self.balances = balances

    @property
    def wechat(self) -> WeChat:
        return need_wechat(self._wechat)

    async def refund(self, req: RefundRequest) -> RefundReply:
        """Refund a paid order in full. Recorded before WeChat is asked, so the refund notify always names a
        refund we know; asking again re-sends the same refund, and for a refunded order finishes what billing
        stopping halfway left undone (the credits' revocation)."""
        order = await self.ledger.order(req.out_trade_no)
        if order is None:
            raise BillingError(404, texts.BILLING_NO_SUCH_ORDER())
        known = await self.ledger.refund(order.out_trade_no)
        if order.status == REFUNDED:
            if known is not None:
                await self._finish(order, known)
            return RefundReply(out_trade_no=order.out_trade_no, out_refund_no=known.out_refund_no if known else "",
                               amount=order.amount, status=SUCCESS)
        if order.status != PAID:
            raise BillingError(409, texts.BILLING_REFUND_NOT_PAID(status=texts.order_status(order.status)))
        if known is None:
            await self.facts.record(RefundRequested(
                out_trade_no=order.out_trade_no, openid=order.openid, out_refund_no=f"RF{order.out_trade_no}",
                amount=order.amount, at=time.time(), reason=req.reason[:80]))
            known = await self.ledger.refund(order.out_trade_no)
            if known is None:  # the stream had it, the follower has not applied it yet
                raise BillingError(503, texts.BILLING_REFUND_RECORDING())
        answer = await self._ask(known, req.reason[:80])
        return RefundReply(out_trade_no=order.out_trade_no, out_refund_no=known.out_refund_no, amount=known.amount,
                           status=str(answer.get("status") or "PROCESSING"))

    async def _ask(self, known: RefundRecord, reason: str) -> dict[str, Any]:
        """Ask WeChat for the recorded refund (idempotent at WeChat by ``out_refund_no``)."""
        answer = await self.wechat.refund(out_trade_no=known.out_trade_no, out_refund_no=known.out_refund_no,
                                          amount=known.amount, reason=reason)
        log.info("refund %s of order %s asked of WeChat: %s", known.out_refund_no, known.out_trade_no,
                 answer.get("status"))
        return answer

    async def _finish(self, order: Order, known: RefundRecord) -> Order:
        """For an order whose ``order_refunded`` is recorded: record its revocation if it is missing."""
        return await self.apply(order, known.out_refund_no, known.refund_id or "", known.refunded_at or time.time())

    async def notify(self, req: NotifyRequest) -> NotifyReply:
        """A refund notify, verified exactly as a payment notify, then checked against the refund we asked for."""
        opened = await open_notify(self._wechat, self.settings.notify_window, req)
        resource, event = opened.get("resource"), opened.get("event_type")
        if event not in (REFUND_EVENT, *REFUND_FAILURES) or not isinstance(resource, dict):
            log.warning("ignoring a refund notify of type %r", event)
            raise NotifyRejected(400, f"Unexpected refund notify type {event!r}.")
        refund = parse_refund(resource)
        order = check_refund(refund, await self.ledger.order(refund.out_trade_no),
                             await self.ledger.refund(refund.out_trade_no), self.wechat.settings)
        if event != REFUND_EVENT or refund.refund_status != SUCCESS:
            log.error("refund %s of order %s did not succeed: %s", refund.out_refund_no, order.out_trade_no,
                      refund.refund_status)
            return NotifyReply(out_trade_no=order.out_trade_no, status=order.status)
        order = await self.apply(order, refund.out_refund_no, refund.refund_id, refund.success_at or time.time())
        return NotifyReply(out_trade_no=order.out_trade_no, status=order.status)

    async def apply(self, order: Order, out_refund_no: str, refund_id: str, at: float) -> Order:
        """Record ``order_refunded`` and ``credits_revoked`` once, however many notifies arrive at once; each
        that is already recorded is skipped, so a call after billing stopped between the two finishes the job.

        The rule for credits already used: a refund takes back what is left of the order's grant, never
        more. It revokes ``min(credits the order granted, the balance not held by running tasks)``: uses
        already charged stay charged (the operator who refunds in full chose to forgive them), tasks
        running now are still charged when they complete, and the balance never goes below zero. Unlimited
        days are taken back in full (``unlimited_until`` moves back by them). The amount is decided here,
        under the balance lock, and written into the fact, so a replay subtracts exactly the same."""
        async with self.balances:
            if await self.ledger.has_fact(f"{CreditsRevoked.KIND}:{order.out_trade_no}"):
                return await self.ledger.order(order.out_trade_no) or order
            if not await self.ledger.has_fact(f"{OrderRefunded.KIND}:{order.out_trade_no}"):
                await self.facts.record(OrderRefunded(out_trade_no=order.out_trade_no, openid=order.openid,
                                                      out_refund_no=out_refund_no, refund_id=refund_id,
                                                      amount=order.amount, at=at))
            account = await self.ledger.account(order.openid)
            held = await self.ledger.held(order.openid, -1.0)
            revoked = max(0, min(order.credits, account.credits - held))
            await self.facts.record(CreditsRevoked(openid=order.openid, out_trade_no=order.out_trade_no,
                                                   credits=revoked, unlimited_days=order.unlimited_days, at=at))
        log.info("order %s refunded (%s): %s of %s credits and %s days revoked from %s", order.out_trade_no,
                 refund_id, revoked, order.credits, order.unlimited_days, order.openid)
        return await self.ledger.order(order.out_trade_no) or order

    # --- reconciling (see ``Reconciler``) ---------------------------------------------------------
    async def revoke_missing(self) -> None:
        """Revoke the credits of refunded orders whose revocation was never recorded (billing stopped between)."""
        for known in await self.ledger.refunds_unrevoked():
            order = await self.ledger.order(known.out_trade_no)
            if order is not None:
                log.warning("order %s was refunded without its credits revoked; revoking them now", order.out_trade_no)
                await self._finish(order, known)

    async def reconcile(self, known: RefundRecord) -> None:
        """Ask WeChat about a refund whose notify is overdue: ask again if WeChat never received it, apply it
        if it succeeded."""
        answer = await self.wechat.query_refund(known.out_refund_no)
        if answer is None:  # billing stopped between recording the refund and asking WeChat
            log.warning("refund %s was never received by WeChat; asking again", known.out_refund_no)
            await self._ask(known, "")
            return
        refund = parse_refund_query(answer, self.wechat.settings.mchid)
        order = check_refund(refund, await self.ledger.order(known.out_trade_no), known, self.wechat.settings)
        if refund.refund_status == SUCCESS:
            log.warning("refund %s succeeded without a notify reaching us; applying it", known.out_refund_no)
            await self.apply(order, refund.out_refund_no, refund.refund_id, refund.success_at or time.time())
        elif refund.refund_status != "PROCESSING":
            log.error("refund %s of order %s did not succeed: %s", known.out_refund_no, known.out_trade_no,
                      refund.refund_status)
