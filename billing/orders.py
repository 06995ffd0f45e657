"""Orders: create (WeChat Pay v3 prepay), payment notify, query, close, and their reconciliation.

Money only comes in through ``Orders.settle``, which records ``order_paid`` and ``credits_granted`` once per
order, however many notifies or queries report the same payment at once (both facts carry WeChat's success
time, so concurrent duplicates are identical and de-duplicated). An order is recorded (``order_created``)
before WeChat hears of it, so a payment never arrives for an order billing does not know; it carries
``expires_at``, sent to WeChat as ``time_expire``, after which the reconciler closes it.
"""

from __future__ import annotations

import logging
import secrets
import time

from bus import texts
from bus.billing import (
    CLOSED,
    PAID,
    PENDING,
    CreditsGranted,
    NotifyReply,
    NotifyRequest,
    OrderClosed,
    OrderCloseRequest,
    OrderCreated,
    OrderPaid,
    OrderQueryRequest,
    OrderView,
    PayCreateReply,
    PayCreateRequest,
)

from .errors import BillingError, NotifyRejected
from .facts import Facts
from .ledger import Ledger, Order
from .notify import SUCCESS, Transaction, check_transaction, parse_transaction
from .settings import BillingSettings
from .shared import need_wechat, open_notify
from .signin import Sessions
from .wechat import WeChat

log = logging.getLogger(__name__)

PAYMENT_EVENT = "TRANSACTION.SUCCESS"
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


def grant(order: Order, at: float) -> CreditsGranted:
    """What a paid order grants; ``at`` is WeChat's success time, so every way of recording it is identical."""
    return CreditsGranted(openid=order.openid, out_trade_no=order.out_trade_no, credits=order.credits,
                          unlimited_days=order.unlimited_days, at=at)


class Orders:
    def __init__(self, settings: BillingSettings, ledger: Ledger, facts: Facts, sessions: Sessions,
                 wechat: WeChat | None) -> None:
        self.settings = settings
        self.ledger = ledger
        self.facts = facts
        self.sessions = sessions
        self._wechat = wechat

    @property
    def wechat(self) -> WeChat:
        return need_wechat(self._wechat)

    async def create(self, req: PayCreateRequest) -> PayCreateReply:
        wechat = self.wechat
        if req.product or req.token:
            openid = self.sessions.openid(req.token)
            product = self.settings.product(req.product)
            if product is None:
                known = ", ".join(p.id for p in self.settings.products)
                raise BillingError(400, texts.BILLING_UNKNOWN_PRODUCT(product=req.product, known=known))
        else:  # the original mini-program's body: the payee's openid and an amount that must be a price
            openid, product = req.openid, next((p for p in self.settings.products if p.amount == req.amount), None)
            if product is None:
                prices = ", ".join(f"{p.amount} ({p.name})" for p in self.settings.products)
                raise BillingError(400, texts.BILLING_NOT_A_PRICE(amount=req.amount, prices=prices))
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

    async def notify(self, req: NotifyRequest) -> NotifyReply:
        """A payment notify: verified, then checked against its order and settled."""
        opened = await open_notify(self._wechat, self.settings.notify_window, req)
        resource = opened.get("resource")
        if opened.get("event_type") != PAYMENT_EVENT or not isinstance(resource, dict):
            log.warning("ignoring a notify of type %r", opened.get("event_type"))
            raise NotifyRejected(400, f"Unexpected notify type {opened.get('event_type')!r}.")
        tx = parse_transaction(resource)
        order = await self.settle(tx)
        return NotifyReply(out_trade_no=order.out_trade_no, status=order.status)

    async def query(self, req: OrderQueryRequest) -> OrderView:
        openid = self.sessions.openid(req.token)
        order = await self.ledger.order(req.out_trade_no)
        if order is None or order.openid != openid:  # someone else's order is as unknown as a missing one
            raise BillingError(404, texts.BILLING_NO_SUCH_ORDER())
        if order.status == PENDING:
            answer = await self.wechat.query(order.out_trade_no)
            if answer is not None:
                try:
                    order = await self.settle(parse_transaction(answer))
                except NotifyRejected as e:
                    log.error("WeChat's answer about %s does not match the order: %s", order.out_trade_no, e)
                    raise BillingError(502, texts.BILLING_ORDER_MISMATCH()) from e
        return order_view(order)

    async def close(self, req: OrderCloseRequest) -> OrderView:
        """Close the caller's pending order at WeChat, then record ``order_closed``; a closed order is
        never paid (WeChat refuses it, and a notify claiming otherwise is rejected in ``settle``)."""
        openid = self.sessions.openid(req.token)
        order = await self.ledger.order(req.out_trade_no)
        if order is None or order.openid != openid:
            raise BillingError(404, texts.BILLING_NO_SUCH_ORDER())
        if order.status == CLOSED:
            return order_view(order)  # closing twice is harmless
        if order.status != PENDING:
            raise BillingError(409, texts.BILLING_CLOSE_NOT_PENDING(status=texts.order_status(order.status)))
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

    async def settle(self, tx: Transaction) -> Order:
        """Check a transaction against its order and, when it is paid, record that exactly once."""
        order = check_transaction(tx, await self.ledger.order(tx.out_trade_no), self.wechat.settings)
        if tx.trade_state != SUCCESS:
            return order
        granted = grant(order, tx.success_at or time.time())
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

    # --- reconciling (see ``Reconciler``) ---------------------------------------------------------
    async def grant_missing(self, now: float) -> None:
        """Grant the credits of paid orders whose grant was never recorded (billing stopped between the facts)."""
        for order in await self.ledger.orders_ungranted():
            log.warning("order %s was paid without its credits granted; granting them now", order.out_trade_no)
            await self.facts.record(grant(order, order.paid_at or now))

    async def reconcile(self, order: Order, now: float) -> None:
        """Ask WeChat about a pending order whose notify is overdue: settle it when paid, record it closed when
        WeChat closed it, close it when it is past its expiry."""
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
