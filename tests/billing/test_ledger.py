"""The ledger alone, in process: a real aiosqlite ``Ledger`` on a temporary file, facts as billing records them
(``Facts`` publishing to ``memory_stream``) and as its follower reads them (``apply_message``); no servers.

What it proves: each fact kind has exactly its effect (through ``EFFECTS``, one method per kind), a fact is
applied once however often it arrives (write-through, redelivery, replay), a fact whose effect fails leaves
nothing behind, and a ledger rebuilt from the stream equals the live one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from billing import ledger as ledger_module
from billing.facts import Facts
from billing.follower import apply_message
from billing.ledger import DAY, EFFECTS, Account, Ledger, Order, RefundRecord, UseRecord, china_day
from bus.billing import (
    FACTS,
    BillingFact,
    CreditsGranted,
    CreditsRevoked,
    OrderClosed,
    OrderCreated,
    OrderPaid,
    OrderRefunded,
    RefundRequested,
    UseReleased,
    UseReserved,
)
from bus.schemas import COMPLETED, FAILED, TaskEvent

from .memory_stream import MemoryStream, replayed
from .support import use_of

NOW = time.time()
USER = "oUser"


def history() -> list[BillingFact]:
    """A paid order of 10 credits (PE1), a pending order (PE2), and one credit held by a running task (t1)."""
    return [
        OrderCreated(out_trade_no="PE1", openid=USER, product="basic", amount=990, at=NOW - 100, credits=10,
                     expires_at=NOW - 100 + 7200),
        OrderPaid(out_trade_no="PE1", openid=USER, amount=990, transaction_id="4200001", at=NOW - 90),
        CreditsGranted(openid=USER, out_trade_no="PE1", credits=10, at=NOW - 90),
        OrderCreated(out_trade_no="PE2", openid=USER, product="premium", amount=2990, at=NOW - 80, credits=100),
        UseReserved(openid=USER, task_id="t1", use="credit", at=NOW - 70),
    ]


def one_of_each() -> list[BillingFact]:
    """One fact of every kind, each with an effect on top of ``history``."""
    return [
        OrderCreated(out_trade_no="PE9", openid=USER, product="basic", amount=990, at=NOW, credits=10),
        OrderPaid(out_trade_no="PE2", openid=USER, amount=2990, transaction_id="4200002", at=NOW),
        CreditsGranted(openid=USER, out_trade_no="PE2", credits=100, at=NOW),
        OrderClosed(out_trade_no="PE2", openid=USER, at=NOW),
        RefundRequested(out_trade_no="PE1", openid=USER, out_refund_no="RFPE1", amount=990, at=NOW),
        OrderRefunded(out_trade_no="PE1", openid=USER, out_refund_no="RFPE1", refund_id="5031", amount=990, at=NOW),
        CreditsRevoked(openid=USER, out_trade_no="PE1", credits=9, at=NOW),
        UseReserved(openid=USER, task_id="t2", use="free", at=NOW),
        UseReleased(openid=USER, task_id="t1", at=NOW, reason="not queued"),
    ]


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    """A ledger holding ``history``."""
    opened = await Ledger.open(tmp_path / "ledger.sqlite3")
    try:
        for seq, fact in enumerate(history(), 1):
            assert await opened.apply_fact(fact, seq)
        yield opened
    finally:
        await opened.close()


def test_every_fact_kind_has_one_effect_in_the_table() -> None:
    assert set(EFFECTS) == set(FACTS.values())
    assert {type(f) for f in one_of_each()} == set(FACTS.values())


@pytest.mark.parametrize("fact", one_of_each(), ids=lambda f: f.KIND)
async def test_each_fact_kind_changes_the_ledger_once(ledger: Ledger, fact: BillingFact) -> None:
    before = await ledger.snapshot()
    assert await ledger.apply_fact(fact, 100)
    after = await ledger.snapshot()
    assert after != before
    assert not await ledger.apply_fact(fact, 101)  # a duplicate (redelivered, replayed): nothing more
    assert await ledger.snapshot() == after
    assert await ledger.has_fact(fact.dedup_id)


# --- each kind's effect -------------------------------------------------------------------------------------
async def test_order_created_is_a_pending_order(ledger: Ledger) -> None:
    assert await ledger.order("PE1") == Order(
        out_trade_no="PE1", openid=USER, product="basic", amount=990, credits=10, unlimited_days=0, status="PAID",
        created_at=NOW - 100, paid_at=NOW - 90, transaction_id="4200001", expires_at=NOW - 100 + 7200,
        prepay_id=None)
    pending = await ledger.order("PE2")
    assert pending is not None and (pending.status, pending.paid_at, pending.expires_at) == ("PENDING", None, None)
    await ledger.set_prepay("PE2", "wx-prepay")  # the one column that is not a fact
    assert (await ledger.order("PE2")).prepay_id == "wx-prepay"  # type: ignore[union-attr]
    assert [o.out_trade_no for o in await ledger.orders_pending(NOW)] == ["PE2"]
    assert [o.out_trade_no for o in await ledger.orders_of(USER)] == ["PE2", "PE1"]  # newest first


async def test_order_paid_pays_only_a_pending_order(ledger: Ledger) -> None:
    await ledger.apply_fact(OrderClosed(out_trade_no="PE2", openid=USER, at=NOW - 5), 10)
    await ledger.apply_fact(OrderPaid(out_trade_no="PE2", openid=USER, amount=2990, transaction_id="42", at=NOW), 11)
    assert (await ledger.order("PE2")).status == "CLOSED"  # type: ignore[union-attr]


async def test_credits_granted_adds_credits_and_extends_unlimited_time(ledger: Ledger) -> None:
    assert await ledger.account(USER) == Account(10, 0.0)
    await ledger.apply_fact(CreditsGranted(openid=USER, out_trade_no="PE7", credits=0, unlimited_days=30,
                                           at=NOW), 10)
    assert await ledger.account(USER) == Account(10, NOW + 30 * DAY)
    # A second package while the first lasts extends from its end, not from the purchase.
    await ledger.apply_fact(CreditsGranted(openid=USER, out_trade_no="PE8", credits=5, unlimited_days=30,
                                           at=NOW + 1), 11)
    account = await ledger.account(USER)
    assert account.credits == 15 and account.unlimited_until == pytest.approx(NOW + 60 * DAY)
    assert [o.out_trade_no for o in await ledger.orders_ungranted()] == []


async def test_order_closed_closes_only_a_pending_order(ledger: Ledger) -> None:
    await ledger.apply_fact(OrderClosed(out_trade_no="PE1", openid=USER, at=NOW), 10)
    await ledger.apply_fact(OrderClosed(out_trade_no="PE2", openid=USER, at=NOW), 11)
    assert [(await ledger.order(no)).status for no in ("PE1", "PE2")] == ["PAID", "CLOSED"]  # type: ignore[union-attr]


async def test_a_refund_is_requested_then_refunded(ledger: Ledger) -> None:
    await ledger.apply_fact(RefundRequested(out_trade_no="PE1", openid=USER, out_refund_no="RFPE1", amount=990,
                                            at=NOW - 10), 10)
    requested = RefundRecord(out_trade_no="PE1", out_refund_no="RFPE1", amount=990, status="PROCESSING",
                             requested_at=NOW - 10, refund_id=None, refunded_at=None)
    assert await ledger.refund("PE1") == requested
    assert await ledger.refunds_processing(NOW) == [requested]
    await ledger.apply_fact(OrderRefunded(out_trade_no="PE1", openid=USER, out_refund_no="RFPE1", refund_id="5031",
                                          amount=990, at=NOW), 11)
    assert (await ledger.order("PE1")).status == "REFUNDED"  # type: ignore[union-attr]
    refunded = RefundRecord("PE1", "RFPE1", 990, "SUCCESS", NOW - 10, "5031", NOW)
    assert await ledger.refund("PE1") == refunded
    assert await ledger.refunds_unrevoked() == [refunded]  # until credits_revoked is recorded
    await ledger.apply_fact(CreditsRevoked(openid=USER, out_trade_no="PE1", credits=9, at=NOW), 12)
    assert await ledger.refunds_unrevoked() == []


async def test_credits_revoked_subtracts_what_was_decided_never_below_zero(ledger: Ledger) -> None:
    await ledger.apply_fact(CreditsGranted(openid=USER, out_trade_no="PE7", credits=0, unlimited_days=30, at=NOW), 10)
    await ledger.apply_fact(CreditsRevoked(openid=USER, out_trade_no="PE7", credits=0, unlimited_days=30, at=NOW), 11)
    account = await ledger.account(USER)  # the days went back; the credits stayed
    assert account.credits == 10 and account.unlimited_until == pytest.approx(NOW)
    await ledger.apply_fact(CreditsRevoked(openid=USER, out_trade_no="PE1", credits=25, at=NOW), 12)
    assert (await ledger.account(USER)).credits == 0


async def test_revoking_never_takes_the_balance_below_zero(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path / "ledger.sqlite3")
    try:
        now = time.time()
        for seq, fact in enumerate([
            OrderCreated(out_trade_no="PE1", openid="oU", product="basic", amount=990, at=now - 50, credits=10),
            CreditsGranted(openid="oU", out_trade_no="PE1", credits=10, at=now - 40),
            UseReserved(openid="oU", task_id="t1", use="credit", at=now - 30),
            CreditsRevoked(openid="oU", out_trade_no="PE1", credits=25, at=now - 20),
        ], start=1):
            assert await ledger.apply_fact(fact, seq)
        assert (await ledger.account("oU")).credits == 0
        assert not await ledger.apply_fact(CreditsRevoked(openid="oU", out_trade_no="PE1", credits=25, at=now), 9)
        await ledger.apply(TaskEvent(task_id="t1", kind="completed", at=now - 10, owner="oU"), 5)
        assert (await ledger.account("oU")).credits == 0  # a charge after a revocation does not go below zero either
    finally:
        await ledger.close()


async def test_a_use_is_reserved_then_charged_or_released(ledger: Ledger) -> None:
    assert await ledger.use("t1") == UseRecord(task_id="t1", openid=USER, use="credit", status="reserved",
                                               day=china_day(NOW - 70), reserved_at=NOW - 70, settled_at=None)
    assert await ledger.held(USER, -1.0) == 1
    assert await ledger.held(USER, NOW - 60) == 0  # a reservation older than the hold no longer holds
    await ledger.apply_fact(UseReserved(openid=USER, task_id="t2", use="free", at=NOW), 10)
    assert await ledger.free_used(USER, china_day(NOW)) == 1
    assert await ledger.free_used(USER, china_day(NOW - DAY)) == 0  # the free quota is per China-time day

    assert await ledger.apply(TaskEvent(task_id="t1", kind=COMPLETED, at=NOW + 1, owner=USER), 11)
    assert await use_of(ledger, "t1") == (USER, "credit", "charged")
    assert (await ledger.use("t1")).settled_at == NOW + 1  # type: ignore[union-attr]
    assert await ledger.account(USER) == Account(9, 0.0)
    assert [u.task_id for u in await ledger.uses_of(USER)] == ["t1"]

    await ledger.apply_fact(UseReleased(openid=USER, task_id="t2", at=NOW + 2), 12)
    assert await use_of(ledger, "t2") == (USER, "free", "released")
    assert await ledger.free_used(USER, china_day(NOW)) == 0  # a released free use is given back
    # A released or charged use stays as it is.
    await ledger.apply_fact(UseReleased(openid=USER, task_id="t1", at=NOW + 3), 13)
    assert await ledger.apply(TaskEvent(task_id="t2", kind=COMPLETED, at=NOW + 4, owner=USER), 14)
    assert [await use_of(ledger, t) for t in ("t1", "t2")] == [(USER, "credit", "charged"), (USER, "free", "released")]
    assert await ledger.account(USER) == Account(9, 0.0)


async def test_a_failed_task_releases_its_use(ledger: Ledger) -> None:
    assert await ledger.apply(TaskEvent(task_id="t1", kind=FAILED, at=NOW, owner=USER, error="broken"), 10)
    assert await use_of(ledger, "t1") == (USER, "credit", "released")
    assert await ledger.held(USER, -1.0) == 0 and await ledger.account(USER) == Account(10, 0.0)


async def test_stats_count_orders_by_status_and_sales_by_day(ledger: Ledger) -> None:
    stats = await ledger.stats(NOW - DAY)
    assert stats.by_status == {"PAID": 1, "PENDING": 1}
    assert [(d.day, d.orders, d.amount) for d in stats.by_day] == [(china_day(NOW - 90), 1, 990)]
    assert (await ledger.stats(NOW)).by_day == []


# --- applied once, all or nothing ---------------------------------------------------------------------------
async def test_a_fact_id_is_applied_once_whatever_it_carries(ledger: Ledger) -> None:
    """The de-duplication id decides: a second grant for the same order, however different, is not applied."""
    assert not await ledger.apply_fact(CreditsGranted(openid=USER, out_trade_no="PE1", credits=999, at=NOW), 10)
    assert not await ledger.apply_fact(UseReserved(openid="oOther", task_id="t1", use="unlimited", at=NOW), 11)
    assert await ledger.account(USER) == Account(10, 0.0)
    assert await use_of(ledger, "t1") == (USER, "credit", "reserved")


async def test_a_task_fact_is_applied_once(ledger: Ledger) -> None:
    event = TaskEvent(task_id="t1", kind=COMPLETED, at=NOW, owner=USER)
    assert await ledger.apply(event, 10)
    assert not await ledger.apply(event, 11)
    assert await ledger.account(USER) == Account(9, 0.0)


async def test_a_fact_whose_effect_fails_leaves_nothing_behind(ledger: Ledger,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The fact id and its effects are one transaction: a failure mid-way can be retried, and is applied then."""
    async def half_done(self: Ledger, fact: CreditsGranted) -> None:
        await self.db.execute("UPDATE accounts SET credits = credits + 1000 WHERE openid = ?", (fact.openid,))
        raise RuntimeError("disk full")

    granted = CreditsGranted(openid=USER, out_trade_no="PE2", credits=100, at=NOW)
    before = await ledger.snapshot()
    monkeypatch.setitem(ledger_module.EFFECTS, CreditsGranted, half_done)
    with pytest.raises(RuntimeError):
        await ledger.apply_fact(granted, 10)
    assert await ledger.snapshot() == before and not await ledger.has_fact(granted.dedup_id)
    monkeypatch.undo()
    assert await ledger.apply_fact(granted, 10)
    assert await ledger.account(USER) == Account(110, 0.0)


async def test_uses_are_settled_deterministically_and_unreserved_tasks_charge_nobody(tmp_path: Path) -> None:
    """Applying the same facts twice, or to a fresh ledger, gives the same balances. A task billing reserved
    nothing for is charged to nobody, whoever its fact names (issue 12: a worker cannot name who pays)."""
    now = time.time()
    facts: list[Any] = [
        CreditsGranted(openid="oA", out_trade_no="PE1", credits=10, at=now - 100),
        CreditsGranted(openid="oU", out_trade_no="PE2", credits=0, unlimited_days=30, at=now - 100),
        UseReserved(openid="oA", task_id="t1", use="credit", at=now - 50),
        TaskEvent(task_id="t1", kind="completed", at=now - 40, owner="oA"),
        UseReserved(openid="oA", task_id="t2", use="credit", at=now - 30),
        TaskEvent(task_id="t2", kind="failed", at=now - 20, owner="oA", error="no"),
        UseReserved(openid="oU", task_id="t3", use="unlimited", at=now - 15),
        TaskEvent(task_id="t3", kind="completed", at=now - 10, owner="oU"),
        TaskEvent(task_id="t4", kind="completed", at=now - 5, owner="oA"),  # no reservation: nobody pays
    ]

    async def project(name: str, times: int) -> dict[str, Any]:
        ledger = await Ledger.open(tmp_path / name)
        try:
            for _ in range(times):
                for seq, fact in enumerate(facts, 1):
                    await (ledger.apply(fact, seq) if isinstance(fact, TaskEvent) else ledger.apply_fact(fact, seq))
            assert await ledger.account("oA") == Account(9, 0.0)
            assert (await ledger.account("oU")).credits == 0
            assert await use_of(ledger, "t3") == ("oU", "unlimited", "charged")
            assert await use_of(ledger, "t2") == ("oA", "credit", "released")
            assert await ledger.use("t4") is None
            return await ledger.snapshot()
        finally:
            await ledger.close()

    assert await project("once.sqlite3", 1) == await project("twice.sqlite3", 2)


# --- live equals replayed -----------------------------------------------------------------------------------
async def live_run(stream: MemoryStream, ledger: Ledger) -> None:
    """Billing's two paths into the ledger: ``Facts.record`` (publish, then apply at once) for its own facts,
    the follower (``apply_message``) for the enhancer's, and the follower again catching up on billing's own."""
    facts = Facts(cast(Any, stream), ledger)
    for fact in [*history(), *one_of_each()]:
        assert await facts.record(fact)
        assert not await facts.record(fact)  # a retried publish: JetStream keeps one, nothing is applied twice
    stream.task_event(TaskEvent(task_id="t2", kind=COMPLETED, at=NOW + 5, owner=USER))
    stream.task_event(TaskEvent(task_id="t2", kind=COMPLETED, at=NOW + 6, owner=USER))  # redelivered, new id
    stream.task_event(TaskEvent(task_id="t9", kind=FAILED, at=NOW + 7))  # no reservation: nobody's
    for msg in stream.messages:  # the follower reads everything, billing's write-through copies included
        assert await apply_message(ledger, msg)


async def test_the_live_ledger_equals_the_one_replayed_from_the_stream(tmp_path: Path) -> None:
    stream = MemoryStream()
    ledger = await Ledger.open(tmp_path / "live.sqlite3")
    try:
        await live_run(stream, ledger)
        live = await ledger.snapshot()
        assert (await ledger.account(USER)).credits == 101  # 10 + 100 granted, 9 revoked; t2 was a free use
        assert await use_of(ledger, "t2") == (USER, "free", "charged")
    finally:
        await ledger.close()
    assert len(stream.messages) == len(history()) + len(one_of_each()) + 3
    assert await replayed(stream.messages, tmp_path / "replayed.sqlite3") == live
    # Replaying twice over (every message delivered again) changes nothing either.
    assert await replayed(stream.messages * 2, tmp_path / "twice.sqlite3") == live
