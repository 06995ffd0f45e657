"""Money moves only on facts only billing can emit (issue 12), on a real ledger and real messages, no servers.

NATS permissions let only billing publish ``pe.events.billing.>`` and only enhancers ``pe.events.task.>``,
so the subject names the role that published a fact. What an enhancer's credential can put on its subjects
is tried here, as an attacker would: every billing fact forged on ``pe.events.task.completed``/``failed``,
kinds that do not match their subject, and ``completed``/``failed`` facts that name someone else, arrive
without a reservation, after a failure, or twice. The follower and the replay apply messages through the
same ``apply_message``, so what is refused live stays inert when the ledger is rebuilt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from billing.follower import apply_message
from billing.ledger import Account, Ledger, china_day
from bus import subjects
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
VICTIM, MALLORY = "oVictim", "oMallory"


def history() -> list[BillingFact]:
    """What billing recorded: the victim bought 10 credits, has a pending order, and one credit reserved."""
    return [
        OrderCreated(out_trade_no="PE1", openid=VICTIM, product="basic", amount=990, at=NOW - 90, credits=10),
        OrderPaid(out_trade_no="PE1", openid=VICTIM, amount=990, transaction_id="4200001", at=NOW - 80),
        CreditsGranted(openid=VICTIM, out_trade_no="PE1", credits=10, at=NOW - 80),
        OrderCreated(out_trade_no="PE2", openid=VICTIM, product="premium", amount=2990, at=NOW - 70, credits=100),
        CreditsGranted(openid=MALLORY, out_trade_no="PE3", credits=5, at=NOW - 60),
        UseReserved(openid=VICTIM, task_id="t1", use="credit", at=NOW - 50),
    ]


def forgeries() -> list[BillingFact]:
    """One of every billing fact kind, each of which moves money or credit when billing records it."""
    return [
        OrderCreated(out_trade_no="PE9", openid=MALLORY, product="premium", amount=1, at=NOW, credits=100),
        OrderPaid(out_trade_no="PE2", openid=VICTIM, amount=2990, transaction_id="forged", at=NOW),
        CreditsGranted(openid=MALLORY, out_trade_no="PE9", credits=99_999, at=NOW, unlimited_days=3650),
        UseReserved(openid=MALLORY, task_id="tX", use="unlimited", at=NOW),
        UseReleased(openid=VICTIM, task_id="t1", at=NOW, reason="forged"),
        OrderClosed(out_trade_no="PE2", openid=VICTIM, at=NOW),
        RefundRequested(out_trade_no="PE1", openid=VICTIM, out_refund_no="RFPE1", amount=990, at=NOW),
        OrderRefunded(out_trade_no="PE1", openid=VICTIM, out_refund_no="RFPE1", refund_id="503", amount=990, at=NOW),
        CreditsRevoked(openid=VICTIM, out_trade_no="PE1", credits=10, at=NOW),
    ]


def test_every_billing_fact_kind_is_forged() -> None:
    assert {type(f) for f in forgeries()} == set(FACTS.values())


@pytest.fixture
async def stream(tmp_path: Path) -> AsyncIterator[tuple[MemoryStream, Ledger]]:
    """The history, on the stream and in a ledger that followed it."""
    events = MemoryStream()
    ledger = await Ledger.open(tmp_path / "ledger.sqlite3")
    try:
        for fact in history():
            await apply_message(ledger, events.put(fact.subject, fact))
        yield events, ledger
    finally:
        await ledger.close()


async def test_each_forgery_would_move_money_on_billings_own_subject(tmp_path: Path) -> None:
    """The control: every forgery below is a fact that billing itself would apply, with an effect."""
    for i, forged in enumerate(forgeries()):
        events = MemoryStream()
        for fact in history():
            events.put(fact.subject, fact)
        before = await replayed(events.messages, tmp_path / f"before{i}.sqlite3")
        events.put(forged.subject, forged)
        assert await replayed(events.messages, tmp_path / f"after{i}.sqlite3") != before, forged


@pytest.mark.parametrize("kind", [COMPLETED, FAILED])
@pytest.mark.parametrize("forged", forgeries(), ids=lambda f: f.KIND)
async def test_a_billing_fact_on_a_task_subject_is_refused(
        stream: tuple[MemoryStream, Ledger], forged: BillingFact, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    events, ledger = stream
    before = await ledger.snapshot()
    msg = events.put(subjects.task_event(kind), forged)
    with caplog.at_level(logging.WARNING, logger="billing.follower"):
        applied = await apply_message(ledger, msg)
    assert await ledger.snapshot() == before
    assert await ledger.account(MALLORY) == Account(5, 0.0)
    assert applied is False
    refused = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert refused and f"stream seq {msg.metadata.sequence.stream}" in refused[0].getMessage()


@pytest.mark.parametrize("subject", [subjects.billing_event(k) for k in ("use_released", "credits_granted",
                                                                          "order_paid")])
@pytest.mark.parametrize("kind", [COMPLETED, FAILED])
async def test_a_task_event_on_a_billing_subject_is_refused(stream: tuple[MemoryStream, Ledger], subject: str,
                                                            kind: str) -> None:
    events, ledger = stream
    before = await ledger.snapshot()
    event = TaskEvent(task_id="t1", kind=kind, at=NOW, owner=VICTIM)
    applied = await apply_message(ledger, events.put(subject, event))
    assert await ledger.snapshot() == before
    assert await use_of(ledger, "t1") == (VICTIM, "credit", "reserved")
    assert applied is False


def _mismatches() -> list[tuple[str, Any]]:
    granted = CreditsGranted(openid=MALLORY, out_trade_no="PE9", credits=99_999, at=NOW)
    return [
        (subjects.task_event(FAILED), TaskEvent(task_id="t1", kind=COMPLETED, at=NOW, owner=VICTIM)),
        (subjects.task_event(COMPLETED), TaskEvent(task_id="t1", kind=FAILED, at=NOW, owner=VICTIM)),
        (subjects.task_event("cancelled"), TaskEvent(task_id="t1", kind="cancelled", at=NOW)),
        (subjects.billing_event("credits_revoked"), granted),  # a grant filed as a revocation
        (subjects.billing_event("use_reserved"), UseReleased(openid=VICTIM, task_id="t1", at=NOW)),
        (subjects.billing_event("no_such_kind"), granted),
        ("pe.events.credits", granted),
    ]


@pytest.mark.parametrize(("subject", "message"), _mismatches(), ids=lambda v: v if isinstance(v, str) else "")
async def test_a_fact_whose_kind_is_not_its_subjects_is_refused(stream: tuple[MemoryStream, Ledger], subject: str,
                                                                message: Any) -> None:
    events, ledger = stream
    before = await ledger.snapshot()
    applied = await apply_message(ledger, events.put(subject, message))
    assert await ledger.snapshot() == before
    assert applied is False


# --- a worker's completed/failed settles billing's reservation, and nothing else ----------------------------
async def test_a_completed_naming_someone_else_charges_the_reservation_holder(
        stream: tuple[MemoryStream, Ledger]) -> None:
    events, ledger = stream
    assert await apply_message(ledger, events.task_event(TaskEvent(task_id="t1", kind=COMPLETED, at=NOW,
                                                                   owner=MALLORY)))
    assert await use_of(ledger, "t1") == (VICTIM, "credit", "charged")
    assert await ledger.account(VICTIM) == Account(9, 0.0)
    assert await ledger.account(MALLORY) == Account(5, 0.0)


async def test_a_completed_without_a_reservation_charges_nobody(stream: tuple[MemoryStream, Ledger]) -> None:
    events, ledger = stream
    for owner in (MALLORY, VICTIM, None):
        task = f"unreserved-{owner}"
        assert await apply_message(ledger, events.task_event(TaskEvent(task_id=task, kind=COMPLETED, at=NOW,
                                                                       owner=owner)))
        assert await ledger.use(task) is None
    assert await ledger.account(VICTIM) == Account(10, 0.0)
    assert await ledger.account(MALLORY) == Account(5, 0.0)
    assert await ledger.free_used(VICTIM, china_day(NOW)) == 0  # nor a free use taken from anyone's quota
    recorded = (await ledger.snapshot())["task_events"]
    assert [kind for _, kind, *_ in recorded].count(COMPLETED) == 3  # recorded, for the record


async def test_a_completed_after_the_task_failed_charges_nobody(stream: tuple[MemoryStream, Ledger]) -> None:
    events, ledger = stream
    await apply_message(ledger, events.task_event(TaskEvent(task_id="t1", kind=FAILED, at=NOW, owner=VICTIM)))
    assert await use_of(ledger, "t1") == (VICTIM, "credit", "released")
    await apply_message(ledger, events.task_event(TaskEvent(task_id="t1", kind=COMPLETED, at=NOW + 1, owner=VICTIM)))
    assert await use_of(ledger, "t1") == (VICTIM, "credit", "released")
    assert await ledger.account(VICTIM) == Account(10, 0.0)


async def test_a_completed_after_the_use_was_given_back_charges_nobody(stream: tuple[MemoryStream, Ledger]) -> None:
    """The edge cancelled the task (``use_released``), yet a worker reports it completed."""
    events, ledger = stream
    released = UseReleased(openid=VICTIM, task_id="t1", at=NOW, reason="cancelled by the user")
    await apply_message(ledger, events.put(released.subject, released))
    await apply_message(ledger, events.task_event(TaskEvent(task_id="t1", kind=COMPLETED, at=NOW + 1, owner=VICTIM)))
    assert await use_of(ledger, "t1") == (VICTIM, "credit", "released")
    assert await ledger.account(VICTIM) == Account(10, 0.0)


async def test_a_completed_twice_charges_once_and_a_later_failed_gives_nothing_back(
        stream: tuple[MemoryStream, Ledger]) -> None:
    events, ledger = stream
    for at, owner in ((NOW, VICTIM), (NOW + 5, VICTIM), (NOW + 9, MALLORY)):  # redelivered, or re-sent altered
        await apply_message(ledger, events.task_event(TaskEvent(task_id="t1", kind=COMPLETED, at=at, owner=owner)))
    await apply_message(ledger, events.task_event(TaskEvent(task_id="t1", kind=FAILED, at=NOW + 10)))
    assert await use_of(ledger, "t1") == (VICTIM, "credit", "charged")
    assert await ledger.account(VICTIM) == Account(9, 0.0)


async def test_a_failed_releases_the_reserved_use_whoever_it_names(stream: tuple[MemoryStream, Ledger]) -> None:
    events, ledger = stream
    await apply_message(ledger, events.task_event(TaskEvent(task_id="t1", kind=FAILED, at=NOW, owner=MALLORY)))
    assert await use_of(ledger, "t1") == (VICTIM, "credit", "released")
    assert await ledger.held(VICTIM, -1.0) == 0


async def test_a_visitors_free_use_is_charged_and_counted_from_its_reservation(
        stream: tuple[MemoryStream, Ledger]) -> None:
    """Anonymous web use: billing reserved a free use for the visitor's address; completing uses it up."""
    events, ledger = stream
    visitor = "anon:5f1c0ffee"
    reserved = UseReserved(openid=visitor, task_id="tv", use="free", at=NOW)
    await apply_message(ledger, events.put(reserved.subject, reserved))
    await apply_message(ledger, events.task_event(TaskEvent(task_id="tv", kind=COMPLETED, at=NOW, owner=visitor)))
    assert await use_of(ledger, "tv") == (visitor, "free", "charged")
    assert await ledger.free_used(visitor, china_day(NOW)) == 1


# --- replay ---------------------------------------------------------------------------------------------------
async def test_replaying_a_stream_with_forged_facts_equals_the_ledger_without_them(tmp_path: Path) -> None:
    events = MemoryStream()
    for fact in history():
        events.put(fact.subject, fact)
    forged = [events.put(subjects.task_event(kind), fact) for fact in forgeries() for kind in (COMPLETED, FAILED)]
    forged.append(events.put(subjects.task_event(FAILED), TaskEvent(task_id="t1", kind=COMPLETED, at=NOW)))
    forged.append(events.put(subjects.billing_event("use_released"), TaskEvent(task_id="t1", kind=FAILED, at=NOW)))
    events.task_event(TaskEvent(task_id="t1", kind=COMPLETED, at=NOW, owner=MALLORY))  # genuine, names Mallory

    rebuilt = await replayed(events.messages, tmp_path / "rebuilt.sqlite3")
    without = await replayed([m for m in events.messages if m not in forged], tmp_path / "without.sqlite3")
    assert rebuilt == without
    assert {openid: credits for openid, credits, _ in rebuilt["accounts"]} == {VICTIM: 9, MALLORY: 5}
    assert [order[0] for order in rebuilt["orders"]] == ["PE1", "PE2"]
