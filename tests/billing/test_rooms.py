"""Billing's rooms in process, no servers: ``Rooms.open`` on a real ledger file, facts published to
``memory_stream``, and a WeChat stub that only carries the merchant's identity (what ``Orders.settle`` checks).

What it proves: the use reservation rules (unlimited, then today's free quota, then a credit not held by a
running task; the last use cannot be spent twice; a retried reservation is the same one), releases, the
refund revocation rule under the shared balance lock, a payment reported many times at once settled once,
the account and stats views keep the shapes the edge forwards, and every billing subject has one handler.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from billing import tokens
from billing.endpoints import routes
from billing.errors import BillingError, NotifyRejected
from billing.facts import Facts
from billing.ledger import Ledger
from billing.notify import Transaction
from billing.rooms import Rooms
from billing.settings import BillingSettings
from billing.wechat import WeChat
from bus import subjects
from bus.billing import (
    ORDER_STATUSES,
    CreditsGranted,
    OrderClosed,
    OrderCreated,
    OrderPaid,
    PayCreateRequest,
    SessionRequest,
    StatsRequest,
    UseReleaseRequest,
    UseReply,
    UseRequest,
    UseReserved,
)
from bus.schemas import COMPLETED, FAILED, TaskEvent
from bus.settings import NatsSettings

from .memory_stream import MemoryStream, replayed

SECRET = secrets.token_hex(16)
APPID, MCHID = "wx0123456789abcdef", "1900000109"
#: One free use a day for a user, two for a visitor; a reservation holds its credit for an hour.
FREE_DAILY, ANONYMOUS_DAILY, HOLD = 1, 2, 3600.0
#: WeChat's success time of every payment here: each report of one payment carries the same.
PAID_AT = time.time() - 5


@dataclass
class Billing:
    rooms: Rooms
    ledger: Ledger
    stream: MemoryStream

    async def record(self, *facts: Any) -> None:
        """Facts billing recorded earlier, or (``TaskEvent``) that an enhancer reported."""
        recorder = Facts(cast(Any, self.stream), self.ledger)
        for fact in facts:
            if isinstance(fact, TaskEvent):
                await self.ledger.apply(fact, self.stream.task_event(fact).metadata.sequence.stream)
            else:
                await recorder.record(fact)

    async def reserve(self, openid: str, task_id: str) -> UseReply:
        return await self.rooms.uses.reserve(UseRequest(token=bearer(openid), task_id=task_id))

    async def credits(self, openid: str) -> int:
        return (await self.ledger.account(openid)).credits


def bearer(openid: str) -> str:
    return "Bearer " + tokens.issue(SECRET.encode(), openid, 3600)[0]


@asynccontextmanager
async def open_billing(root: Path, **settings: Any) -> AsyncIterator[Billing]:
    config = BillingSettings(**{"nats": NatsSettings(), "db_path": root / "ledger.sqlite3", "session_secret": SECRET,
                                "free_daily": FREE_DAILY, "anonymous_daily": ANONYMOUS_DAILY,
                                "reservation_hold": HOLD, **settings})
    ledger = await Ledger.open(config.db_path)
    stream = MemoryStream()
    wechat = cast(WeChat, SimpleNamespace(settings=SimpleNamespace(appid=APPID, mchid=MCHID)))
    try:
        yield Billing(Rooms.open(config, ledger, Facts(cast(Any, stream), ledger), wechat), ledger, stream)
    finally:
        await ledger.close()


@pytest.fixture
async def billing(tmp_path: Path) -> AsyncIterator[Billing]:
    async with open_billing(tmp_path) as b:
        yield b


def user() -> str:
    return f"o{secrets.token_hex(8)}"


def granted(openid: str, credits: int = 0, days: int = 0) -> CreditsGranted:
    return CreditsGranted(openid=openid, out_trade_no=f"PE{secrets.token_hex(6)}", credits=credits,
                          unlimited_days=days, at=time.time())


async def refused(status: int, call: Any) -> BillingError:
    with pytest.raises(BillingError) as e:
        await call
    assert e.value.status == status, e.value.message
    return e.value


# --- reserving a use ---------------------------------------------------------------------------------------
async def test_a_use_is_paid_by_unlimited_else_the_free_quota_else_a_credit(billing: Billing) -> None:
    openid = user()
    await billing.record(granted(openid, credits=2))
    assert [(await billing.reserve(openid, f"t{i}")).use for i in range(3)] == ["free", "credit", "credit"]
    error = await refused(402, billing.reserve(openid, "t3"))  # both credits are held by running tasks
    assert "buy a package" in error.message
    await billing.record(granted(openid, days=30))
    assert (await billing.reserve(openid, "t4")).use == "unlimited"
    assert billing.stream.kinds().count("use_reserved") == 4


async def test_a_held_credit_comes_back_when_its_task_fails_and_leaves_when_it_completes(billing: Billing) -> None:
    openid = user()
    await billing.record(granted(openid, credits=1), UseReserved(openid=openid, task_id="free", use="free",
                                                                  at=time.time()))
    assert (await billing.reserve(openid, "t1")).use == "credit"
    await refused(402, billing.reserve(openid, "t2"))
    await billing.record(TaskEvent(task_id="t1", kind=FAILED, at=time.time(), owner=openid, error="broken"))
    assert (await billing.reserve(openid, "t2")).use == "credit"
    await billing.record(TaskEvent(task_id="t2", kind=COMPLETED, at=time.time(), owner=openid))
    assert await billing.credits(openid) == 0
    await refused(402, billing.reserve(openid, "t3"))


async def test_a_reservation_older_than_the_hold_no_longer_holds_its_credit(billing: Billing) -> None:
    """Its task was lost (no fact will come): after ``reservation_hold`` the credit is usable again."""
    openid = user()
    await billing.record(granted(openid, credits=1),
                         UseReserved(openid=openid, task_id="free", use="free", at=time.time()),
                         UseReserved(openid=openid, task_id="lost", use="credit", at=time.time() - HOLD - 1))
    assert (await billing.reserve(openid, "t1")).use == "credit"


async def test_concurrent_reservations_cannot_spend_the_last_credit_twice(billing: Billing) -> None:
    openid = user()
    await billing.record(granted(openid, credits=1))
    outcomes = await asyncio.gather(*[billing.reserve(openid, f"t{i}") for i in range(10)], return_exceptions=True)
    uses = sorted(o.use if isinstance(o, UseReply) else str(cast(BillingError, o).status) for o in outcomes)
    assert uses == ["402"] * 8 + ["credit", "free"]


async def test_a_retried_reservation_is_the_same_one_and_nobody_else_may_take_the_task(billing: Billing) -> None:
    openid = user()
    first = await billing.reserve(openid, "t1")
    assert await billing.reserve(openid, "t1") == first  # the edge retried: no second use is taken
    assert billing.stream.kinds() == ["use_reserved"]
    await refused(409, billing.reserve(user(), "t1"))
    await billing.record(TaskEvent(task_id="t1", kind=COMPLETED, at=time.time(), owner=openid))
    assert (await billing.reserve(openid, "t1")).status == "charged"


async def test_the_free_quota_is_per_china_day_and_a_released_use_gives_it_back(billing: Billing) -> None:
    openid = user()
    await billing.record(UseReserved(openid=openid, task_id="yesterday", use="free", at=time.time() - 86400))
    assert (await billing.reserve(openid, "t1")).use == "free"
    await refused(402, billing.reserve(openid, "t2"))
    await billing.rooms.uses.release(UseReleaseRequest(openid=openid, task_id="t1", reason="queue full"))
    assert (await billing.reserve(openid, "t2")).use == "free"


async def test_visitors_have_a_daily_free_quota_per_address(billing: Billing) -> None:
    def visit(client: str, task_id: str) -> Any:
        return billing.rooms.uses.reserve(UseRequest(token="", task_id=task_id, client=client))

    assert [(await visit("c1", f"t{i}")).use for i in range(ANONYMOUS_DAILY)] == ["free"] * ANONYMOUS_DAILY
    error = await refused(402, visit("c1", "t9"))
    assert "visitors" in error.message
    reply = await visit("c2", "u1")  # another address has its own quota
    assert (reply.openid, reply.use) == ("anon:c2", "free")
    await billing.record(TaskEvent(task_id="t0", kind=FAILED, at=time.time(), error="broken"))
    assert (await visit("c1", "t9")).use == "free"  # a failed task gives its use back


async def test_without_a_visitor_limit_visitors_are_never_refused(tmp_path: Path) -> None:
    async with open_billing(tmp_path, anonymous_daily=0) as b:
        for i in range(5):
            assert (await b.rooms.uses.reserve(UseRequest(token="", task_id=f"t{i}", client="c"))).use == "free"


async def test_without_sessions_a_signed_in_use_is_503_and_visitors_go_on(tmp_path: Path) -> None:
    async with open_billing(tmp_path, session_secret=None) as b:
        await refused(503, b.reserve(user(), "t1"))
        assert (await b.rooms.uses.reserve(UseRequest(token="", task_id="t2", client="c"))).status == "reserved"


async def test_a_forged_session_is_refused(billing: Billing) -> None:
    await refused(401, billing.rooms.uses.reserve(UseRequest(token="Bearer v1.oX.9999999999.AAAA", task_id="t1")))
    assert billing.stream.kinds() == []


# --- releasing a use -------------------------------------------------------------------------------------
async def test_only_a_reserved_use_is_released_and_only_once(billing: Billing) -> None:
    openid, uses = user(), billing.rooms.uses
    await billing.reserve(openid, "t1")
    await refused(404, uses.release(UseReleaseRequest(openid=user(), task_id="t1", reason="")))
    await refused(404, uses.release(UseReleaseRequest(openid=openid, task_id="nope", reason="")))
    for _ in range(2):
        reply = await uses.release(UseReleaseRequest(openid=openid, task_id="t1", reason="storage down"))
        assert (reply.use, reply.status) == ("free", "released")
    await billing.reserve(openid, "t2")
    await billing.record(TaskEvent(task_id="t2", kind=COMPLETED, at=time.time(), owner=openid))
    assert (await uses.release(UseReleaseRequest(openid=openid, task_id="t2", reason=""))).status == "charged"
    assert billing.stream.kinds() == ["use_reserved", "use_released", "use_reserved"]


# --- refunds take back what is left ---------------------------------------------------------------------------
async def test_a_refund_revokes_what_is_left_once_and_running_tasks_keep_their_credit(billing: Billing) -> None:
    openid, now = user(), time.time()
    order = OrderCreated(out_trade_no="PE1", openid=openid, product="basic", amount=990, at=now - 60, credits=10)
    await billing.record(order, OrderPaid(out_trade_no="PE1", openid=openid, amount=990, transaction_id="42",
                                          at=now - 50),
                         CreditsGranted(openid=openid, out_trade_no="PE1", credits=10, at=now - 50))
    assert (await billing.reserve(openid, "free")).use == "free"
    assert (await billing.reserve(openid, "used")).use == "credit"
    await billing.record(TaskEvent(task_id="used", kind=COMPLETED, at=now, owner=openid))
    assert (await billing.reserve(openid, "running")).use == "credit"
    paid = await billing.ledger.order("PE1")
    assert paid is not None

    refunds = billing.rooms.refunds
    await asyncio.gather(*[refunds.apply(paid, "RFPE1", "5031", now) for _ in range(3)])  # notifies at once
    assert billing.stream.kinds().count("order_refunded") == billing.stream.kinds().count("credits_revoked") == 1
    assert (await billing.ledger.order("PE1")).status == "REFUNDED"  # type: ignore[union-attr]
    assert await billing.credits(openid) == 1  # 10 - 1 used - 8 revoked: the running task's credit is left
    await refused(402, billing.reserve(openid, "next"))
    await billing.record(TaskEvent(task_id="running", kind=COMPLETED, at=now, owner=openid))
    assert await billing.credits(openid) == 0


# --- a payment reported many times ------------------------------------------------------------------------------
def paid(out_trade_no: str, openid: str, amount: int, state: str = "SUCCESS") -> Transaction:
    return Transaction(out_trade_no=out_trade_no, appid=APPID, mchid=MCHID, trade_state=state, amount=amount,
                       currency="CNY", openid=openid, transaction_id="4200000001", success_at=PAID_AT)


async def test_a_payment_reported_many_times_at_once_is_settled_once(billing: Billing, tmp_path: Path) -> None:
    openid = user()
    await billing.record(OrderCreated(out_trade_no="PE1", openid=openid, product="basic", amount=990,
                                      at=time.time(), credits=10))
    orders = billing.rooms.orders
    await asyncio.gather(*[orders.settle(paid("PE1", openid, 990)) for _ in range(5)])
    assert (await orders.settle(paid("PE1", openid, 990))).status == "PAID"  # a query after the notifies
    assert billing.stream.kinds() == ["order_created", "order_paid", "credits_granted"]
    assert await billing.credits(openid) == 10
    assert await billing.ledger.snapshot() == await replayed(billing.stream.messages, tmp_path / "replayed.sqlite3")


async def test_a_closed_order_reported_paid_is_rejected(billing: Billing) -> None:
    openid = user()
    await billing.record(OrderCreated(out_trade_no="PE1", openid=openid, product="basic", amount=990,
                                      at=time.time(), credits=10),
                         OrderClosed(out_trade_no="PE1", openid=openid, at=time.time()))
    with pytest.raises(NotifyRejected) as e:
        await billing.rooms.orders.settle(paid("PE1", openid, 990))
    assert e.value.status == 409
    for wrong in (paid("PE1", openid, 1), paid("PE1", user(), 990), paid("PE404", openid, 990)):
        with pytest.raises(NotifyRejected):
            await billing.rooms.orders.settle(wrong)
    assert await billing.credits(openid) == 0


async def test_without_wechat_orders_answer_503(tmp_path: Path) -> None:
    config = BillingSettings(nats=NatsSettings(), db_path=tmp_path / "ledger.sqlite3", session_secret=SECRET)
    ledger = await Ledger.open(config.db_path)
    try:
        rooms = Rooms.open(config, ledger, Facts(cast(Any, MemoryStream()), ledger), None)
        await refused(503, rooms.orders.create(PayCreateRequest(token=bearer(user()), product="basic")))
    finally:
        await ledger.close()


# --- what the edge forwards ---------------------------------------------------------------------------------
async def test_the_account_and_stats_keep_their_shapes(billing: Billing) -> None:
    openid, now = user(), time.time()
    await billing.record(
        OrderCreated(out_trade_no="PE1", openid=openid, product="basic", amount=990, at=now - 60, credits=10),
        OrderCreated(out_trade_no="PE2", openid=openid, product="basic", amount=990, at=now - 50, credits=10))
    await billing.rooms.orders.settle(paid("PE1", openid, 990))
    await billing.reserve(openid, "free")
    await billing.reserve(openid, "running")
    await billing.record(TaskEvent(task_id="free", kind=COMPLETED, at=now, owner=openid))

    view = await billing.rooms.accounts.account(SessionRequest(token=bearer(openid)))
    assert (view.credits, view.credits_reserved, view.free_left_today, view.unlimited) == (9, 1, 0, False)
    assert [o["out_trade_no"] for o in view.orders] == ["PE1"]  # paid orders only
    assert set(view.orders[0]) == {"out_trade_no", "product", "amount", "credits", "unlimited_days", "status",
                                   "created_at", "paid_at"}
    assert view.uses == [{"task_id": "free", "use": "free", "reserved_at": pytest.approx(now, abs=5),
                          "charged_at": now}]
    mine = await billing.rooms.accounts.orders(SessionRequest(token=bearer(openid)))
    assert [o["out_trade_no"] for o in mine.orders] == ["PE2", "PE1"]

    stats = await billing.rooms.accounts.stats(StatsRequest(days=1))
    assert stats.by_status == {**dict.fromkeys(ORDER_STATUSES, 0), "PAID": 1, "PENDING": 1}
    assert [list(d) for d in stats.by_day] == [["day", "orders", "amount"]]
    assert (stats.paid_orders, stats.paid_amount) == (1, 990)


def test_every_billing_subject_is_answered_by_one_room(billing: Billing) -> None:
    table = routes(billing.rooms)
    requests = {v for k, v in vars(subjects).items()
                if k.startswith("BILLING_") and isinstance(v, str) and v.startswith(f"{subjects.PREFIX}.billing.")}
    assert set(table) == requests
    rooms = {id(room) for room in vars(billing.rooms).values()}
    assert all(id(route.handler.__self__) in rooms for route in table.values())  # type: ignore[attr-defined]
    assert len({route.name for route in table.values()}) == len(table)
