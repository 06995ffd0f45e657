"""What billing answers on the bus: sign-in, create an order, a payment notify, an order query.

Each method takes a request message and returns a reply message or raises ``BillingError``; the
wiring to ``nats.micro`` is in ``endpoints.py``. Money only moves through ``settle``, which
records ``order_paid`` and ``credits_granted`` once per order, however many notifies or queries
report the same payment at once.
"""

from __future__ import annotations

import logging
import secrets
import time

from bus.billing import (
    PAID,
    PENDING,
    CreditsGranted,
    NotifyReply,
    NotifyRequest,
    OpenidRequest,
    OrderCreated,
    OrderPaid,
    OrderQueryRequest,
    OrderView,
    PayCreateReply,
    PayCreateRequest,
    SessionReply,
)

from . import tokens
from .errors import BillingError, NotifyRejected
from .facts import Facts
from .ledger import Ledger, Order
from .notify import SUCCESS, Transaction, check_timestamp, check_transaction, lower_headers, parse_transaction
from .settings import BillingSettings, WeChatSettings
from .wechat import WeChat

log = logging.getLogger(__name__)

PAYMENT_EVENT = "TRANSACTION.SUCCESS"


def new_out_trade_no() -> str:
    """``PE`` + time + 80 random bits: 32 characters of ``[A-Z0-9]``, as WeChat allows."""
    return f"PE{time.strftime('%Y%m%d%H%M%S', time.gmtime())}{secrets.token_hex(8).upper()}"


def order_view(order: Order) -> OrderView:
    return OrderView(out_trade_no=order.out_trade_no, product=order.product, amount=order.amount,
                     status=order.status, created_at=order.created_at, paid_at=order.paid_at,
                     transaction_id=order.transaction_id)


class BillingApi:
    def __init__(self, settings: BillingSettings, ledger: Ledger, facts: Facts, wechat: WeChat | None) -> None:
        self.settings = settings
        self.ledger = ledger
        self.facts = facts
        self._wechat = wechat

    @property
    def wechat(self) -> WeChat:
        if self._wechat is None:
            raise BillingError(503, "WeChat Pay is not configured on this server.")
        return self._wechat

    @property
    def wechat_settings(self) -> WeChatSettings:
        return self.wechat.settings

    def _openid(self, token: str) -> str:
        assert self.settings.session_secret  # settings require it with WeChat
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
        order = OrderCreated(out_trade_no=new_out_trade_no(), openid=openid, product=product.id,
                             amount=product.amount, at=time.time(), credits=product.credits,
                             unlimited_days=product.unlimited_days)
        # Recorded before WeChat hears of it: a payment can never arrive for an order we do not know.
        await self.facts.record(order)
        prepay_id = await wechat.prepay(out_trade_no=order.out_trade_no, description=product.name,
                                        amount=product.amount, openid=openid)
        await self.ledger.set_prepay(order.out_trade_no, prepay_id)
        log.info("order %s created for %s: %s, %s fen", order.out_trade_no, openid, product.id, product.amount)
        return PayCreateReply(out_trade_no=order.out_trade_no, product=product.id, amount=product.amount,
                              pay_params=wechat.pay_params(prepay_id))

    async def notify(self, req: NotifyRequest) -> NotifyReply:
        wechat = self.wechat
        headers = lower_headers(req.headers)
        check_timestamp(headers, self.settings.notify_window)
        opened = wechat.open_notify(headers, req.body)
        if not opened:
            raise NotifyRejected(401, "The notify's signature or encryption does not verify.")
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

    # --- money ----------------------------------------------------------------------------------
    async def settle(self, tx: Transaction) -> Order:
        """Check a transaction against its order and, when it is paid, record that exactly once."""
        order = check_transaction(tx, await self.ledger.order(tx.out_trade_no), self.wechat_settings)
        if tx.trade_state != SUCCESS:
            return order
        granted = CreditsGranted(openid=order.openid, out_trade_no=order.out_trade_no, credits=order.credits,
                                 unlimited_days=order.unlimited_days, at=tx.success_at or time.time())
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


def describe_error(e: BillingError) -> str:
    """Service-error descriptions travel in a NATS header: one line."""
    return " ".join(e.message.split())
