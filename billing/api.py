"""What billing answers on the bus: sign-in, orders (create, notify, query, close, list, stats),
refunds (request, refund notify), the account, and reserving a use for a mini-program user's enhancement.

Each method takes a request message and returns a reply message or raises ``BillingError``; the
wiring to ``nats.micro`` is in ``endpoints.py``. Money only moves through ``settle``, which
records ``order_paid`` and ``credits_granted`` once per order, however many notifies or queries
report the same payment at once; money only goes back through ``apply_refund``, which records
``order_refunded`` and ``credits_revoked`` once per order, the same way. Credits only move through
the ledger's projection of ``use_reserved`` (decided here, under a lock), the enhancer's
``completed``/``failed`` facts and those two.

Every multi-fact step is re-derivable from the ledger, so billing stopping between two facts loses
nothing: the retried request, a redelivered notify or the reconciler (``reconcile``: at start-up, then
every ``reconcile_interval``) records what is missing, and only that. The reconciler also asks WeChat
about pending orders and refunds whose notify never came, and closes orders WeChat no longer takes
payment for (``expires_at``, sent to WeChat as ``time_expire``).

Why a reservation fact rather than counting in-flight tasks at the edge: the decision (unlimited,
free or credit) is made once, by the one process that holds the balances, and written to the stream
before the task is queued, so concurrent uploads cannot both take the last use, and a replay charges
exactly what was decided even if the free quota is reconfigured later. Billing runs as one process
(its ledger is a local SQLite file); the lock is per process.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from bus.billing import (
    CLOSED,
    ORDER_STATUSES,
    PAID,
    PENDING,
    REFUNDED,
    RELEASED,
    RESERVED,
    USE_CREDIT,
    USE_FREE,
    USE_UNLIMITED,
    AccountView,
    CreditsGranted,
    CreditsRevoked,
    NotifyReply,
    NotifyRequest,
    OpenidRequest,
    OrderClosed,
    OrderCloseRequest,
    OrderCreated,
    OrderPaid,
    OrderQueryRequest,
    OrderRefunded,
    OrdersReply,
    OrderView,
    PayCreateReply,
    PayCreateRequest,
    RefundReply,
    RefundRequest,
    RefundRequested,
    SessionReply,
    SessionRequest,
    StatsReply,
    StatsRequest,
    UseReleased,
    UseReleaseRequest,
    UseReply,
    UseRequest,
    UseReserved,
)

from . import tokens
from .errors import BillingError, NotifyRejected
from .facts import Facts
from .ledger import DAY, Ledger, Order, RefundRecord, china_day
from .notify import (
    SUCCESS,
    Transaction,
    check_refund,
    check_timestamp,
    check_transaction,
    lower_headers,
    parse_refund,
    parse_refund_query,
    parse_transaction,
)
from .settings import BillingSettings, WeChatSettings
from .wechat import WeChat

log = logging.getLogger(__name__)

PAYMENT_EVENT = "TRANSACTION.SUCCESS"
REFUND_EVENT = "REFUND.SUCCESS"
#: Refund notifies that report a refund that did not happen; accepted (so WeChat stops) and not applied.
REFUND_FAILURES = ("REFUND.ABNORMAL", "REFUND.CLOSED")
#: WeChat trade states of an order that can no longer be paid.
TRADE_CLOSED = ("CLOSED", "REVOKED")
#: How long an order without ``expires_at`` (created before it was set) could be paid: its prepay id's life.
LEGACY_ORDER_EXPIRY = 7200.0


def new_out_trade_no() -> str:
    """``PE`` + time + 80 random bits: 32 characters of ``[A-Z0-9]``, as WeChat allows."""
    return f"PE{time.strftime('%Y%m%d%H%M%S', time.gmtime())}{secrets.token_hex(8).upper()}"


def order_view(order: Order) -> OrderView:
    return OrderView(out_trade_no=order.out_trade_no, product=order.product, amount=order.amount,
                     status=order.status, created_at=order.created_at, paid_at=order.paid_at,
                     transaction_id=order.transaction_id)


def order_dict(order: Order) -> dict[str, Any]:
    """An order in a list (``/pay/orders``, ``/account``): what its owner may see."""
    return {"out_trade_no": order.out_trade_no, "product": order.product, "amount": order.amount,
            "credits": order.credits, "unlimited_days": order.unlimited_days, "status": order.status,
            "created_at": order.created_at, "paid_at": order.paid_at}


class BillingApi:
    def __init__(self, settings: BillingSettings, ledger: Ledger, facts: Facts, wechat: WeChat | None) -> None:
        self.settings = settings
        self.ledger = ledger
        self.facts = facts
        self._wechat = wechat
        # Check-then-reserve is one step: two uploads racing for a user's last use cannot both pass.
        self._reserving = asyncio.Lock()

    @property
    def wechat(self) -> WeChat:
        if self._wechat is None:
            raise BillingError(503, "WeChat Pay is not configured on this server.")
        return self._wechat

    @property
    def wechat_settings(self) -> WeChatSettings:
        return self.wechat.settings

    def _openid(self, token: str) -> str:
        if not self.settings.session_secret:  # no WeChat, so no session was ever issued
            raise BillingError(503, "Mini-program sign-in is not configured on this server.")
        return tokens.verify(self.settings.session_secret.encode(), token)

    # --- routes ---------------------------------------------------------------------------------
    async def sign_in(self, req: OpenidRequest) -> SessionReply:
        code = req.code.strip()
        if not code or len(code) > 128:
            raise BillingError(400, "Send the code from wx.login as {\"code\": ...}.")
        openid = await self.wechat.code2session(code)
        assert self.settings.session_secret
        token, expires = tokens.issue(self.settings.session_secret.encode(), openid, self.settings.session_ttl)
        log.info("signed in %s", openid)
        return SessionReply(openid=openid, token=token, expires_at=expires)

    async def create(self, req: PayCreateRequest) -> PayCreateReply:
        wechat = self.wechat
        openid = self._openid(req.token)
        product = self.settings.product(req.product)
        if product is None:
            known = ", ".join(p.id for p in self.settings.products)
            raise BillingError(400, f"Unknown product {req.product!r}; choose one of: {known}.")
        now = time.time()
        order = OrderCreated(out_trade_no=new_out_trade_no(), openid=openid, product=product.id,
                             amount=product.amount, at=now, credits=product.credits,
                             unlimited_days=product.unlimited_days, expires_at=now + self.settings.order_expiry)
        # Recorded before WeChat hears of it: a payment can never arrive for an order we do not know.
        await self.facts.record(order)
        prepay_id = await wechat.prepay(out_trade_no=order.out_trade_no, description=product.name,
                                        amount=product.amount, openid=openid, expires_at=order.expires_at)
        await self.ledger.set_prepay(order.out_trade_no, prepay_id)
        log.info("order %s created for %s: %s, %s fen", order.out_trade_no, openid, product.id, product.amount)
        return PayCreateReply(out_trade_no=order.out_trade_no, product=product.id, amount=product.amount,
                              pay_params=wechat.pay_params(prepay_id))

    async def _open(self, req: NotifyRequest) -> dict[str, Any]:
        """A notify's verified, decrypted content: fresh (timestamp window), signed by WeChat, readable."""
        headers = lower_headers(req.headers)
        check_timestamp(headers, self.settings.notify_window)
        opened = await self.wechat.open_notify(headers, req.body)
        if not opened:
            raise NotifyRejected(401, "The notify's signature or encryption does not verify.")
        return opened

    async def notify(self, req: NotifyRequest) -> NotifyReply:
        opened = await self._open(req)
        resource = opened.get("resource")
        if opened.get("event_type") != PAYMENT_EVENT or not isinstance(resource, dict):
            log.warning("ignoring a notify of type %r", opened.get("event_type"))
            raise NotifyRejected(400, f"Unexpected notify type {opened.get('event_type')!r}.")
        tx = parse_transaction(resource)
        order = await self.settle(tx)
        return NotifyReply(out_trade_no=order.out_trade_no, status=order.status)

    async def query(self, req: OrderQueryRequest) -> OrderView:
        openid = self._openid(req.token)
        order = await self.ledger.order(req.out_trade_no)
        if order is None or order.openid != openid:  # someone else's order is as unknown as a missing one
            raise BillingError(404, "No such order.")
        if order.status == PENDING:
            answer = await self.wechat.query(order.out_trade_no)
            if answer is not None:
                try:
                    order = await self.settle(parse_transaction(answer))
                except NotifyRejected as e:
                    log.error("WeChat's answer about %s does not match the order: %s", order.out_trade_no, e)
                    raise BillingError(502, "WeChat Pay's record of this order does not match ours.") from e
        return order_view(order)

    async def close(self, req: OrderCloseRequest) -> OrderView:
        """Close the caller's pending order at WeChat, then record ``order_closed``; a closed order is
        never paid (WeChat refuses it, and a notify claiming otherwise is rejected in ``settle``)."""
        openid = self._openid(req.token)
        order = await self.ledger.order(req.out_trade_no)
        if order is None or order.openid != openid:
            raise BillingError(404, "No such order.")
        if order.status == CLOSED:
            return order_view(order)  # closing twice is harmless
        if order.status != PENDING:
            raise BillingError(409, f"The order is {order.status}; only a pending order can be closed.")
        await self._close(order, "owner")
        return order_view(await self.ledger.order(order.out_trade_no) or order)

    async def _close(self, order: Order, reason: str) -> None:
        """Close a pending order at WeChat, then record ``order_closed``. When WeChat says it was paid meanwhile,
        the payment is recorded instead and the 409 raised."""
        try:
            await self.wechat.close(order.out_trade_no)
        except BillingError as e:
            if e.status != 409:
                raise
            answer = await self.wechat.query(order.out_trade_no)
            if answer is not None:
                await self.settle(parse_transaction(answer))
            raise
        await self.facts.record(OrderClosed(out_trade_no=order.out_trade_no, openid=order.openid, at=time.time(),
                                            reason=reason))
        log.info("order %s closed (%s)", order.out_trade_no, reason)

    async def refund(self, req: RefundRequest) -> RefundReply:
        """Refund a paid order in full (the edge checked the admin token). Recorded before WeChat is asked,
        so the refund notify always names a refund we know; asking again re-sends the same refund, and for a
        refunded order finishes what billing stopping halfway left undone (the credits' revocation)."""
        order = await self.ledger.order(req.out_trade_no)
        if order is None:
            raise BillingError(404, "No such order.")
        known = await self.ledger.refund(order.out_trade_no)
        if order.status == REFUNDED:
            if known is not None:
                await self._finish_refund(order, known)
            return RefundReply(out_trade_no=order.out_trade_no, out_refund_no=known.out_refund_no if known else "",
                               amount=order.amount, status=SUCCESS)
        if order.status != PAID:
            raise BillingError(409, f"The order is {order.status}; only a paid order can be refunded.")
        if known is None:
            await self.facts.record(RefundRequested(
                out_trade_no=order.out_trade_no, openid=order.openid, out_refund_no=f"RF{order.out_trade_no}",
                amount=order.amount, at=time.time(), reason=req.reason[:80]))
            known = await self.ledger.refund(order.out_trade_no)
            if known is None:  # the stream had it, the follower has not applied it yet
                raise BillingError(503, "The refund is being recorded; please ask again in a moment.")
        answer = await self._ask_refund(known, req.reason[:80])
        return RefundReply(out_trade_no=order.out_trade_no, out_refund_no=known.out_refund_no, amount=known.amount,
                           status=str(answer.get("status") or "PROCESSING"))

    async def _ask_refund(self, known: RefundRecord, reason: str) -> dict[str, Any]:
        """Ask WeChat for the recorded refund (idempotent at WeChat by ``out_refund_no``)."""
        answer = await self.wechat.refund(out_trade_no=known.out_trade_no, out_refund_no=known.out_refund_no,
                                          amount=known.amount, reason=reason)
        log.info("refund %s of order %s asked of WeChat: %s", known.out_refund_no, known.out_trade_no,
                 answer.get("status"))
        return answer

    async def _finish_refund(self, order: Order, known: RefundRecord) -> Order:
        """For an order whose ``order_refunded`` is recorded: record its revocation if it is missing."""
        return await self.apply_refund(order, known.out_refund_no, known.refund_id or "",
                                       known.refunded_at or time.time())

    async def refund_notify(self, req: NotifyRequest) -> NotifyReply:
        """A refund notify, verified exactly as a payment notify, then checked against the refund we asked for."""
        opened = await self._open(req)
        resource, event = opened.get("resource"), opened.get("event_type")
        if event not in (REFUND_EVENT, *REFUND_FAILURES) or not isinstance(resource, dict):
            log.warning("ignoring a refund notify of type %r", event)
            raise NotifyRejected(400, f"Unexpected refund notify type {event!r}.")
        refund = parse_refund(resource)
        order = check_refund(refund, await self.ledger.order(refund.out_trade_no),
                             await self.ledger.refund(refund.out_trade_no), self.wechat_settings)
        if event != REFUND_EVENT or refund.refund_status != SUCCESS:
            log.error("refund %s of order %s did not succeed: %s", refund.out_refund_no, order.out_trade_no,
                      refund.refund_status)
            return NotifyReply(out_trade_no=order.out_trade_no, status=order.status)
        order = await self.apply_refund(order, refund.out_refund_no, refund.refund_id,
                                        refund.success_at or time.time())
        return NotifyReply(out_trade_no=order.out_trade_no, status=order.status)

    async def apply_refund(self, order: Order, out_refund_no: str, refund_id: str, at: float) -> Order:
        """Record ``order_refunded`` and ``credits_revoked`` once, however many notifies arrive at once; each
        that is already recorded is skipped, so a call after billing stopped between the two finishes the job.

        The rule for credits already used: a refund takes back what is left of the order's grant, never
        more. It revokes ``min(credits the order granted, the balance not held by running tasks)``: uses
        already charged stay charged (the operator who refunds in full chose to forgive them), tasks
        running now are still charged when they complete, and the balance never goes below zero. Unlimited
        days are taken back in full (``unlimited_until`` moves back by them). The amount is decided here,
        under the reservation lock, and written into the fact, so a replay subtracts exactly the same."""
        async with self._reserving:
            if await self.ledger.has_fact(f"{CreditsRevoked.KIND}:{order.out_trade_no}"):
                return await self.ledger.order(order.out_trade_no) or order
            if not await self.ledger.has_fact(f"{OrderRefunded.KIND}:{order.out_trade_no}"):
                await self.facts.record(OrderRefunded(out_trade_no=order.out_trade_no, openid=order.openid,
                                                      out_refund_no=out_refund_no, refund_id=refund_id,
                                                      amount=order.amount, at=at))
            credits, _ = await self.ledger.account(order.openid)
            held = await self.ledger.held(order.openid, -1.0)
            revoked = max(0, min(order.credits, credits - held))
            await self.facts.record(CreditsRevoked(openid=order.openid, out_trade_no=order.out_trade_no,
                                                   credits=revoked, unlimited_days=order.unlimited_days, at=at))
        log.info("order %s refunded (%s): %s of %s credits and %s days revoked from %s", order.out_trade_no,
                 refund_id, revoked, order.credits, order.unlimited_days, order.openid)
        return await self.ledger.order(order.out_trade_no) or order

    # --- reconciling ----------------------------------------------------------------------------
    async def reconcile(self, now: float | None = None) -> None:
        """Finish what a crash or a lost notify left undone; safe at any time and as often as wanted.

        Paid orders whose credits were not granted are granted, refunded orders whose credits were not revoked
        are revoked (no WeChat needed for either). With WeChat: refunds
        and pending orders older than one ``reconcile_interval`` (their notify is overdue) are asked about:
        a refund WeChat never received is asked again, a successful one applied; a paid order is settled,
        an order WeChat closed is recorded closed, an unpaid one past its expiry is closed."""
        now = time.time() if now is None else now
        for order in await self.ledger.orders_ungranted():
            log.warning("order %s was paid without its credits granted; granting them now", order.out_trade_no)
            await self.facts.record(self._grant(order, order.paid_at or now))
        for known in await self.ledger.refunds_unrevoked():
            order = await self.ledger.order(known.out_trade_no)
            if order is not None:
                log.warning("order %s was refunded without its credits revoked; revoking them now", order.out_trade_no)
                await self._finish_refund(order, known)
        if self._wechat is None:
            return
        overdue = now - self.settings.reconcile_interval
        for known in await self.ledger.refunds_processing(overdue):
            await self._reconciled(f"refund {known.out_refund_no}", self._reconcile_refund(known))
        for order in await self.ledger.orders_pending(overdue):
            await self._reconciled(f"order {order.out_trade_no}", self._reconcile_order(order, now))

    @staticmethod
    async def _reconciled(what: str, step: Any) -> None:
        """One item's reconciliation; a refusal (WeChat away, a mismatch) is logged and retried next pass."""
        try:
            await step
        except BillingError as e:
            log.warning("reconciling %s: %s (%s); trying again next pass", what, e.message, e.status)

    async def _reconcile_refund(self, known: RefundRecord) -> None:
        answer = await self.wechat.query_refund(known.out_refund_no)
        if answer is None:  # billing stopped between recording the refund and asking WeChat
            log.warning("refund %s was never received by WeChat; asking again", known.out_refund_no)
            await self._ask_refund(known, "")
            return
        refund = parse_refund_query(answer, self.wechat_settings.mchid)
        order = check_refund(refund, await self.ledger.order(known.out_trade_no), known, self.wechat_settings)
        if refund.refund_status == SUCCESS:
            log.warning("refund %s succeeded without a notify reaching us; applying it", known.out_refund_no)
            await self.apply_refund(order, refund.out_refund_no, refund.refund_id, refund.success_at or time.time())
        elif refund.refund_status != "PROCESSING":
            log.error("refund %s of order %s did not succeed: %s", known.out_refund_no, known.out_trade_no,
                      refund.refund_status)

    async def _reconcile_order(self, order: Order, now: float) -> None:
        expired = now >= (order.expires_at or order.created_at + LEGACY_ORDER_EXPIRY)
        answer = await self.wechat.query(order.out_trade_no)
        if answer is None:  # WeChat never had it (no prepay): past its expiry it never will
            if expired:
                await self.facts.record(OrderClosed(out_trade_no=order.out_trade_no, openid=order.openid, at=now,
                                                    reason="expired"))
            return
        tx = parse_transaction(answer)
        if tx.trade_state == SUCCESS:
            log.warning("order %s was paid without a notify reaching us; settling it", order.out_trade_no)
            await self.settle(tx)
        elif tx.trade_state in TRADE_CLOSED:
            await self.facts.record(OrderClosed(out_trade_no=order.out_trade_no, openid=order.openid, at=now,
                                                reason="closed at WeChat"))
        elif expired and tx.trade_state != "REFUND":
            await self._close(order, "expired")

    # --- uses -----------------------------------------------------------------------------------
    async def reserve(self, req: UseRequest) -> UseReply:
        """Hold one use for a task about to be queued: unlimited, else today's free quota, else a credit.

        Decided and recorded (``use_reserved`` on the stream) under one lock, counting uses held by
        tasks still running, so concurrent uploads cannot spend the same last use twice."""
        anonymous = not req.token
        openid = f"anon:{req.client[:64]}" if anonymous else self._openid(req.token)
        async with self._reserving:
            held = await self.ledger.use(req.task_id)
            if held is not None:  # the edge retried the same task
                if held[0] != openid:
                    raise BillingError(409, "This task belongs to someone else.")
                return UseReply(openid=openid, task_id=req.task_id, use=held[1], status=held[2])
            now = time.time()
            use = await (self._anonymous_funding(openid, now) if anonymous else self._funding(openid, now))
            await self.facts.record(UseReserved(openid=openid, task_id=req.task_id, use=use, at=now))
        log.info("task %s: one %s use reserved for %s", req.task_id, use, openid)
        return UseReply(openid=openid, task_id=req.task_id, use=use, status=RESERVED)

    async def _funding(self, openid: str, now: float) -> str:
        credits, until = await self.ledger.account(openid)
        if until > now:
            return USE_UNLIMITED
        if await self.ledger.free_used(openid, china_day(now)) < self.settings.free_daily:
            return USE_FREE
        if credits - await self.ledger.held(openid, now - self.settings.reservation_hold) > 0:
            return USE_CREDIT
        free = f"today's {self.settings.free_daily} free uses are spent and " if self.settings.free_daily else ""
        raise BillingError(402, f"No enhancements left: {free}there are no credits; buy a package to continue.")

    async def _anonymous_funding(self, visitor: str, now: float) -> str:
        """A web visitor has a daily quota of free uses, counted like a user's (a failed task gives one back)."""
        limit = self.settings.anonymous_daily
        if limit and await self.ledger.free_used(visitor, china_day(now)) >= limit:
            raise BillingError(402, f"Today's {limit} free enhancements for visitors are used up; come back "
                                    "tomorrow, or use the mini-program to buy more.")
        return USE_FREE

    async def release(self, req: UseReleaseRequest) -> UseReply:
        """Give back the use of a task the edge could not queue (only a still-reserved one changes)."""
        held = await self.ledger.use(req.task_id)
        if held is None or held[0] != req.openid:
            raise BillingError(404, "No use is reserved for this task.")
        if held[2] == RESERVED:
            await self.facts.record(UseReleased(openid=req.openid, task_id=req.task_id, at=time.time(),
                                                reason=req.reason[:200]))
            log.info("task %s: use released (%s)", req.task_id, req.reason[:200])
        return UseReply(openid=req.openid, task_id=req.task_id, use=held[1],
                        status=RELEASED if held[2] == RESERVED else held[2])

    async def account(self, req: SessionRequest) -> AccountView:
        openid = self._openid(req.token)
        now = time.time()
        credits, until = await self.ledger.account(openid)
        held = await self.ledger.held(openid, now - self.settings.reservation_hold)
        free_left = max(0, self.settings.free_daily - await self.ledger.free_used(openid, china_day(now)))
        paid = [order_dict(o) for o in await self.ledger.orders_of(openid) if o.status == PAID]
        return AccountView(openid=openid, credits=max(0, credits - held), credits_reserved=held,
                           unlimited=until > now, unlimited_until=until if until > now else None,
                           free_daily=self.settings.free_daily, free_left_today=free_left,
                           orders=paid, uses=await self.ledger.uses_of(openid))

    async def orders(self, req: SessionRequest) -> OrdersReply:
        openid = self._openid(req.token)
        return OrdersReply(orders=[order_dict(o) for o in await self.ledger.orders_of(openid)])

    async def stats(self, req: StatsRequest) -> StatsReply:
        days = min(max(req.days, 1), 366)
        by_status, by_day = await self.ledger.stats(time.time() - days * DAY)
        return StatsReply(by_status={s: by_status.get(s, 0) for s in (*ORDER_STATUSES, *by_status)},
                          by_day=by_day, paid_orders=sum(d["orders"] for d in by_day),
                          paid_amount=sum(d["amount"] for d in by_day))

    # --- money ----------------------------------------------------------------------------------
    async def settle(self, tx: Transaction) -> Order:
        """Check a transaction against its order and, when it is paid, record that exactly once."""
        order = check_transaction(tx, await self.ledger.order(tx.out_trade_no), self.wechat_settings)
        if tx.trade_state != SUCCESS:
            return order
        granted = self._grant(order, tx.success_at or time.time())
        if order.status == PAID and await self.ledger.has_fact(granted.dedup_id):
            return order  # a notify retried, or a query after the notify: nothing left to do
        if order.status not in (PENDING, PAID):
            log.error("order %s is %s but WeChat reports it paid (%s)", order.out_trade_no, order.status,
                      tx.transaction_id)
            raise NotifyRejected(409, f"The order is {order.status}; it cannot be paid.")
        # Both facts carry WeChat's success time, so concurrent duplicates are identical; the stream keeps
        # one of each (Nats-Msg-Id) and the ledger applies each once (a fact id is applied only once).
        await self.facts.record(OrderPaid(out_trade_no=order.out_trade_no, openid=order.openid, amount=order.amount,
                                          transaction_id=tx.transaction_id, at=granted.at))
        await self.facts.record(granted)
        log.info("order %s paid (%s), %s credits / %s days granted to %s", order.out_trade_no, tx.transaction_id,
                 order.credits, order.unlimited_days, order.openid)
        return await self.ledger.order(order.out_trade_no) or order


    @staticmethod
    def _grant(order: Order, at: float) -> CreditsGranted:
        """What a paid order grants; ``at`` is WeChat's success time, so every way of recording it is identical."""
        return CreditsGranted(openid=order.openid, out_trade_no=order.out_trade_no, credits=order.credits,
                              unlimited_days=order.unlimited_days, at=at)


def describe_error(e: BillingError) -> str:
    """Service-error descriptions travel in a NATS header: one line."""
    return " ".join(e.message.split())
