"""Billing messages: the edge's requests to billing and billing's replies (request/reply), and the
billing facts on ``PE_EVENTS`` from which the ledger is projected.

Amounts are integer fen everywhere. Failures do not travel as reply messages: billing answers them
as ``nats.micro`` service errors (``Nats-Service-Error-Code`` = the HTTP status the edge answers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import subjects
from .schemas import Message

# --- Order statuses ------------------------------------------------------------------------
PENDING, PAID, CLOSED, REFUNDED = "PENDING", "PAID", "CLOSED", "REFUNDED"
ORDER_STATUSES = (PENDING, PAID, CLOSED, REFUNDED)


# --- Requests and replies (edge <-> billing) -----------------------------------------------
@dataclass(frozen=True)
class OpenidRequest(Message):
    """``POST /api/wechat/auth/openid``: a ``wx.login`` code to exchange for our session."""

    TYPE: ClassVar[str] = "pe.v1.billing.openid_request"

    code: str


@dataclass(frozen=True)
class SessionReply(Message):
    """The caller's openid and a signed, expiring session token of ours (never WeChat's session_key)."""

    TYPE: ClassVar[str] = "pe.v1.billing.session"

    openid: str
    token: str
    expires_at: float


@dataclass(frozen=True)
class PayCreateRequest(Message):
    """``POST /api/wechat/pay/create``: the client names a product, never an amount — except the original
    mini-program, which sends ``{openid, total_fee}``: then ``product`` is empty, ``openid`` names the payee
    and ``amount`` (fen) must be exactly a product's price."""

    TYPE: ClassVar[str] = "pe.v1.billing.pay_create"

    token: str
    product: str
    openid: str = ""
    amount: int = 0


@dataclass(frozen=True)
class PayCreateReply(Message):
    """The order and the parameters ``wx.requestPayment`` takes (``signType: RSA``)."""

    TYPE: ClassVar[str] = "pe.v1.billing.pay_created"

    out_trade_no: str
    product: str
    amount: int
    pay_params: dict[str, str]


@dataclass(frozen=True)
class NotifyRequest(Message):
    """A WeChat Pay notify exactly as the edge received it: billing verifies the signature itself."""

    TYPE: ClassVar[str] = "pe.v1.billing.notify"

    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class NotifyReply(Message):
    """The notify was accepted (the edge answers WeChat 204); rejections are service errors."""

    TYPE: ClassVar[str] = "pe.v1.billing.notify_accepted"

    out_trade_no: str
    status: str


@dataclass(frozen=True)
class OrderQueryRequest(Message):
    """``GET /api/wechat/pay/query/{out_trade_no}``: only the order's owner may ask."""

    TYPE: ClassVar[str] = "pe.v1.billing.order_query"

    token: str
    out_trade_no: str


@dataclass(frozen=True)
class OrderView(Message):
    """An order as its owner sees it."""

    TYPE: ClassVar[str] = "pe.v1.billing.order"

    out_trade_no: str
    product: str
    amount: int
    status: str
    created_at: float
    paid_at: float | None = None
    transaction_id: str | None = None


@dataclass(frozen=True)
class OrderCloseRequest(Message):
    """``POST /api/wechat/pay/close/{out_trade_no}``: the owner gives up a pending order."""

    TYPE: ClassVar[str] = "pe.v1.billing.order_close"

    token: str
    out_trade_no: str


@dataclass(frozen=True)
class RefundRequest(Message):
    """``POST /api/wechat/pay/refund/{out_trade_no}`` (the edge checks the admin token; billing trusts it)."""

    TYPE: ClassVar[str] = "pe.v1.billing.refund_request"

    out_trade_no: str
    reason: str = ""


@dataclass(frozen=True)
class RefundReply(Message):
    """The refund WeChat accepted; ``status`` is WeChat's (``PROCESSING`` until the refund notify)."""

    TYPE: ClassVar[str] = "pe.v1.billing.refund"

    out_trade_no: str
    out_refund_no: str
    amount: int
    status: str


# --- Uses of the service (edge <-> billing) --------------------------------------------------
#: How a reserved enhancement is paid for: unlimited package, today's free quota, or one credit.
USE_UNLIMITED, USE_FREE, USE_CREDIT = "unlimited", "free", "credit"
USE_KINDS = (USE_UNLIMITED, USE_FREE, USE_CREDIT)
#: A use's life: reserved when the task is accepted, then charged (completed) or released (failed, refused).
RESERVED, CHARGED, RELEASED = "reserved", "charged", "released"


@dataclass(frozen=True)
class UseRequest(Message):
    """The edge asks, before queueing a task, to reserve one use for it: for a mini-program user
    (``token``: their session) or for an anonymous web visitor (``client``: a hash of their address)."""

    TYPE: ClassVar[str] = "pe.v1.billing.use_request"

    token: str
    task_id: str
    client: str = ""


@dataclass(frozen=True)
class UseReleaseRequest(Message):
    """The edge could not queue a task it reserved a use for (storage down, queue full): give it back."""

    TYPE: ClassVar[str] = "pe.v1.billing.use_release"

    openid: str
    task_id: str
    reason: str


@dataclass(frozen=True)
class UseReply(Message):
    """A reserved (or released) use: who, which task, and how it is paid for."""

    TYPE: ClassVar[str] = "pe.v1.billing.use"

    openid: str
    task_id: str
    use: str
    status: str


@dataclass(frozen=True)
class SessionRequest(Message):
    """A request that only needs the caller's session (``/account``, ``/pay/orders``)."""

    TYPE: ClassVar[str] = "pe.v1.billing.session_request"

    token: str


@dataclass(frozen=True)
class AccountView(Message):
    """``GET /api/wechat/account``: what the caller may still do, and what they paid and used."""

    TYPE: ClassVar[str] = "pe.v1.billing.account"

    openid: str
    #: Credits left, not counting those held by tasks still running.
    credits: int
    #: Credits held by tasks still running (charged when they complete, returned when they fail).
    credits_reserved: int
    unlimited: bool
    unlimited_until: float | None
    free_daily: int
    free_left_today: int
    #: Paid orders and charged enhancements, newest first (dicts: see ``Ledger.history``).
    orders: list[dict[str, Any]] = field(default_factory=list)
    uses: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class OrdersReply(Message):
    """``GET /api/wechat/pay/orders``: the caller's orders, newest first."""

    TYPE: ClassVar[str] = "pe.v1.billing.orders"

    orders: list[dict[str, Any]]


@dataclass(frozen=True)
class StatsRequest(Message):
    """``GET /api/wechat/pay/stats`` (the edge checks the admin token; billing trusts the edge's role)."""

    TYPE: ClassVar[str] = "pe.v1.billing.stats_request"

    days: int = 30


@dataclass(frozen=True)
class StatsReply(Message):
    """Orders counted by status, and paid amounts (fen) per China-time day of payment."""

    TYPE: ClassVar[str] = "pe.v1.billing.stats"

    by_status: dict[str, int]
    #: ``[{"day": "YYYY-MM-DD", "orders": n, "amount": fen}]``, newest first.
    by_day: list[dict[str, Any]]
    paid_orders: int
    paid_amount: int


# --- Facts (PE_EVENTS) ---------------------------------------------------------------------
@dataclass(frozen=True)
class BillingFact(Message):
    """Base of billing facts: each has a subject and a de-duplication id (``Nats-Msg-Id``), so a
    fact published twice, by a retry or by concurrent duplicate notifies, is stored once."""

    KIND: ClassVar[str] = ""

    @property
    def subject(self) -> str:
        return subjects.billing_event(self.KIND)

    @property
    def dedup_id(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class OrderCreated(BillingFact):
    """An order exists (before WeChat is asked for a prepay id), so no paid order is ever unknown."""

    TYPE: ClassVar[str] = "pe.v1.billing.order_created"
    KIND: ClassVar[str] = "order_created"

    out_trade_no: str
    openid: str
    product: str
    amount: int
    at: float
    #: What was sold, fixed at the order (a later price list does not change it).
    credits: int = 0
    unlimited_days: int = 0
    #: WeChat takes no payment after this (the prepay's ``time_expire``); 0 for orders from before it was set.
    expires_at: float = 0.0

    @property
    def dedup_id(self) -> str:
        return f"{self.KIND}:{self.out_trade_no}"


@dataclass(frozen=True)
class OrderPaid(BillingFact):
    """WeChat confirmed the payment (verified notify or query); ``at`` is WeChat's success time."""

    TYPE: ClassVar[str] = "pe.v1.billing.order_paid"
    KIND: ClassVar[str] = "order_paid"

    out_trade_no: str
    openid: str
    amount: int
    transaction_id: str
    at: float

    @property
    def dedup_id(self) -> str:
        return f"{self.KIND}:{self.out_trade_no}"


@dataclass(frozen=True)
class CreditsGranted(BillingFact):
    """Uses granted for a paid order: ``credits`` uses, and/or ``unlimited_days`` of unlimited use from ``at``."""

    TYPE: ClassVar[str] = "pe.v1.billing.credits_granted"
    KIND: ClassVar[str] = "credits_granted"

    openid: str
    out_trade_no: str
    credits: int
    at: float
    unlimited_days: int = 0
    reason: str = "purchase"

    @property
    def dedup_id(self) -> str:
        return f"{self.KIND}:{self.out_trade_no}"


@dataclass(frozen=True)
class UseReserved(BillingFact):
    """One use held for a task before it is queued, and how it will be paid for (decided here, so a
    replay charges exactly what was decided, whatever the free quota is configured to be later)."""

    TYPE: ClassVar[str] = "pe.v1.billing.use_reserved"
    KIND: ClassVar[str] = "use_reserved"

    openid: str
    task_id: str
    use: str
    at: float

    @property
    def dedup_id(self) -> str:
        return f"{self.KIND}:{self.task_id}"


@dataclass(frozen=True)
class UseReleased(BillingFact):
    """A reserved use given back because its task was never queued (a failed task releases by its own fact)."""

    TYPE: ClassVar[str] = "pe.v1.billing.use_released"
    KIND: ClassVar[str] = "use_released"

    openid: str
    task_id: str
    at: float
    reason: str = ""

    @property
    def dedup_id(self) -> str:
        return f"{self.KIND}:{self.task_id}"


@dataclass(frozen=True)
class OrderClosed(BillingFact):
    """WeChat closed a pending order (its owner asked, or it expired unpaid): it can no longer be paid."""

    TYPE: ClassVar[str] = "pe.v1.billing.order_closed"
    KIND: ClassVar[str] = "order_closed"

    out_trade_no: str
    openid: str
    at: float
    #: ``owner`` (the owner closed it) or ``expired`` (the reconciler closed it after ``expires_at``).
    reason: str = "owner"

    @property
    def dedup_id(self) -> str:
        return f"{self.KIND}:{self.out_trade_no}"


@dataclass(frozen=True)
class RefundRequested(BillingFact):
    """A full refund of a paid order was asked of WeChat; recorded first, so every refund notify names a
    refund we know. One per order (``out_refund_no`` is derived from the order), so retries are idempotent."""

    TYPE: ClassVar[str] = "pe.v1.billing.refund_requested"
    KIND: ClassVar[str] = "refund_requested"

    out_trade_no: str
    openid: str
    out_refund_no: str
    amount: int
    at: float
    reason: str = ""

    @property
    def dedup_id(self) -> str:
        return f"{self.KIND}:{self.out_trade_no}"


@dataclass(frozen=True)
class OrderRefunded(BillingFact):
    """WeChat returned the money (verified ``REFUND.SUCCESS`` notify); ``at`` is WeChat's success time."""

    TYPE: ClassVar[str] = "pe.v1.billing.order_refunded"
    KIND: ClassVar[str] = "order_refunded"

    out_trade_no: str
    openid: str
    out_refund_no: str
    refund_id: str
    amount: int
    at: float

    @property
    def dedup_id(self) -> str:
        return f"{self.KIND}:{self.out_trade_no}"


@dataclass(frozen=True)
class CreditsRevoked(BillingFact):
    """What a refunded order's grant loses: exactly these credits and days (decided by billing, so a replay
    subtracts the same whatever order the ledger saw other facts in)."""

    TYPE: ClassVar[str] = "pe.v1.billing.credits_revoked"
    KIND: ClassVar[str] = "credits_revoked"

    openid: str
    out_trade_no: str
    credits: int
    at: float
    unlimited_days: int = 0
    reason: str = "refund"

    @property
    def dedup_id(self) -> str:
        return f"{self.KIND}:{self.out_trade_no}"


FACTS: dict[str, type[BillingFact]] = {
    cls.TYPE: cls for cls in (OrderCreated, OrderPaid, CreditsGranted, UseReserved, UseReleased, OrderClosed,
                              RefundRequested, OrderRefunded, CreditsRevoked)}
