"""The ledger: an SQLite projection of the facts on ``PE_EVENTS`` (orders, payments, credits, tasks).

Every fact is applied at most once, keyed by its de-duplication id, inside one transaction with
its effects; so a fact seen twice (published, then followed from the stream; redelivered; replayed)
changes nothing the second time, and a ledger rebuilt from the first event equals the original.
The one column that is not a fact is an order's ``prepay_id`` (WeChat's handle, re-obtainable).

Uses: ``use_reserved`` holds one use for a task (``uses``: reserved); the task's ``completed`` fact
charges it (a credit leaves ``accounts.credits`` then), its ``failed`` fact or ``use_released``
gives it back. Only a reservation moves money: a task fact names no payer billing believes (see
``apply``). Reserved credits are subtracted when billing decides whether one is left.

Close and refund: ``order_closed`` makes a pending order CLOSED; ``refund_requested`` records the
(one, full) refund of an order; ``order_refunded`` makes it REFUNDED; ``credits_revoked`` subtracts
exactly what billing decided to take back (see ``Refunds.apply``). Balances never go below zero.

Rows come back as small frozen dataclasses (``Order``, ``RefundRecord``, ``Account``, ``UseRecord``,
``Stats`` of ``DaySales``), never as tuples read by index (``snapshot`` alone gives raw rows: it exists to
compare two ledgers). A billing fact's effects are found through ``EFFECTS``
(fact type → method), so adding a fact kind is one method and one table entry, and a test checks the
table covers every kind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite

from bus.billing import (
    CHARGED,
    CLOSED,
    PAID,
    PENDING,
    REFUNDED,
    RELEASED,
    RESERVED,
    USE_CREDIT,
    USE_FREE,
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

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS task_events (
    task_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT,
    at REAL NOT NULL,
    stream_seq INTEGER NOT NULL,
    PRIMARY KEY (task_id, kind)
);
CREATE TABLE IF NOT EXISTS facts (
    id TEXT PRIMARY KEY,            -- the fact's Nats-Msg-Id
    type TEXT NOT NULL,
    stream_seq INTEGER
);
CREATE TABLE IF NOT EXISTS orders (
    out_trade_no TEXT PRIMARY KEY,
    openid TEXT NOT NULL,
    product TEXT NOT NULL,
    amount INTEGER NOT NULL,        -- fen
    credits INTEGER NOT NULL,       -- what was sold
    unlimited_days INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    paid_at REAL,
    transaction_id TEXT,
    prepay_id TEXT,
    expires_at REAL                 -- WeChat takes no payment after this (NULL: an order from before it was set)
);
CREATE INDEX IF NOT EXISTS orders_by_openid ON orders (openid, created_at);
CREATE TABLE IF NOT EXISTS accounts (
    openid TEXT PRIMARY KEY,
    credits INTEGER NOT NULL DEFAULT 0,
    unlimited_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS credit_history (
    fact_id TEXT PRIMARY KEY,
    openid TEXT NOT NULL,
    credits INTEGER NOT NULL,
    unlimited_days INTEGER NOT NULL,
    reason TEXT NOT NULL,
    ref TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS uses (
    task_id TEXT PRIMARY KEY,
    openid TEXT NOT NULL,
    use TEXT NOT NULL,              -- unlimited | free | credit
    status TEXT NOT NULL,           -- reserved | charged | released
    day TEXT NOT NULL,              -- China-time day of the reservation (the free quota is per day)
    reserved_at REAL NOT NULL,
    settled_at REAL
);
CREATE INDEX IF NOT EXISTS uses_by_openid ON uses (openid, day);
CREATE TABLE IF NOT EXISTS refunds (
    out_trade_no TEXT PRIMARY KEY,  -- one (full) refund per order
    out_refund_no TEXT NOT NULL UNIQUE,
    amount INTEGER NOT NULL,        -- fen
    status TEXT NOT NULL,           -- PROCESSING | SUCCESS
    requested_at REAL NOT NULL,
    refund_id TEXT,
    refunded_at REAL
);
"""

#: WeChat Pay and its users keep China time: the free quota and the stats' days are days there.
CHINA = timezone(timedelta(hours=8))


def china_day(at: float) -> str:
    return datetime.fromtimestamp(at, CHINA).date().isoformat()

DAY = 86400.0


@dataclass(frozen=True)
class RefundRecord:
    """An order's (one, full) refund as billing recorded it."""

    out_trade_no: str
    out_refund_no: str
    amount: int
    status: str  # PROCESSING | SUCCESS
    requested_at: float
    refund_id: str | None
    refunded_at: float | None


@dataclass(frozen=True)
class Order:
    out_trade_no: str
    openid: str
    product: str
    amount: int
    credits: int
    unlimited_days: int
    status: str
    created_at: float
    paid_at: float | None
    transaction_id: str | None
    expires_at: float | None
    prepay_id: str | None


@dataclass(frozen=True)
class Account:
    """A user's balance: credits bought and not yet charged or revoked, and the end of unlimited use."""

    credits: int = 0
    unlimited_until: float = 0.0


@dataclass(frozen=True)
class UseRecord:
    """One task's use: who pays, how (``use``), and where it stands (reserved, charged, released)."""

    task_id: str
    openid: str
    use: str
    status: str
    day: str  # China-time day of the reservation
    reserved_at: float
    settled_at: float | None


@dataclass(frozen=True)
class DaySales:
    """Paid orders and their amount (fen) on one China-time day."""

    day: str
    orders: int
    amount: int


@dataclass(frozen=True)
class Stats:
    """Orders by status (all time), and sales per day, newest first."""

    by_status: dict[str, int]
    by_day: list[DaySales]


_ORDER_COLUMNS = ("out_trade_no, openid, product, amount, credits, unlimited_days, status, "
                  "created_at, paid_at, transaction_id, expires_at, prepay_id")
_REFUND_COLUMNS = "out_trade_no, out_refund_no, amount, status, requested_at, refund_id, refunded_at"
_USE_COLUMNS = "task_id, openid, use, status, day, reserved_at, settled_at"


class Ledger:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        # One writer at a time: aiosqlite shares one connection, and a fact's effects are one transaction.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Ledger:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.executescript(SCHEMA)
        async with db.execute("PRAGMA table_info(orders)") as cur:
            columns = {row[1] async for row in cur}
        if "expires_at" not in columns:  # a ledger from before orders had an expiry
            await db.execute("ALTER TABLE orders ADD COLUMN expires_at REAL")
        await db.commit()
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    # --- applying facts -----------------------------------------------------------------------
    async def apply(self, event: TaskEvent, stream_seq: int) -> bool:
        """Record a task fact (once per task and kind) and settle the use billing reserved for that task.

        A worker's fact settles only a reservation billing itself made (``use_reserved``): ``completed``
        charges a still-reserved use, ``failed`` releases one. Who pays is the reservation's openid; the
        event's ``owner`` is recorded but never decides money, so a worker cannot name a payer, a task
        without a reservation charges nobody, and a ``completed`` after the use was released (the task
        failed or was cancelled) changes nothing. False when the fact was already recorded."""
        async with self._lock:
            try:
                cur = await self.db.execute(
                    "INSERT OR IGNORE INTO task_events (task_id, kind, owner, at, stream_seq) VALUES (?, ?, ?, ?, ?)",
                    (event.task_id, event.kind, event.owner, event.at, stream_seq))
                if cur.rowcount == 1 and event.kind in (COMPLETED, FAILED):
                    await self._settle(event)
                await self.db.commit()
                return cur.rowcount == 1
            except BaseException:
                await self.db.rollback()
                raise

    async def _settle(self, event: TaskEvent) -> None:
        """Charge (completed) or release (failed) the task's reserved use; a credit leaves the balance on charge."""
        async with self.db.execute("SELECT openid, use FROM uses WHERE task_id = ? AND status = ?",
                                   (event.task_id, RESERVED)) as cur:
            row = await cur.fetchone()
        if row is None:
            return  # no reservation, or already settled: nothing a worker's fact may move
        openid, use = row
        if event.owner and event.owner != openid:
            log.warning("task %s: its %s fact names %s, but the use is %s's; settling %s's", event.task_id,
                        event.kind, event.owner, openid, openid)
        status = CHARGED if event.kind == COMPLETED else RELEASED
        await self.db.execute("UPDATE uses SET status = ?, settled_at = ? WHERE task_id = ?",
                              (status, event.at, event.task_id))
        if status == CHARGED and use == USE_CREDIT:
            # MAX: never below zero, even for a task charged after a refund revoked what was left.
            await self.db.execute("UPDATE accounts SET credits = MAX(0, credits - 1) WHERE openid = ?", (openid,))

    async def apply_fact(self, fact: BillingFact, stream_seq: int | None) -> bool:
        """Apply a billing fact and its effects atomically; False when it was applied before."""
        async with self._lock:
            try:
                cur = await self.db.execute("INSERT OR IGNORE INTO facts (id, type, stream_seq) VALUES (?, ?, ?)",
                                            (fact.dedup_id, fact.TYPE, stream_seq))
                if cur.rowcount != 1:
                    await self.db.rollback()
                    return False
                await EFFECTS[type(fact)](self, fact)
                await self.db.commit()
                return True
            except BaseException:
                await self.db.rollback()
                raise

    async def _order_created(self, fact: OrderCreated) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO orders (out_trade_no, openid, product, amount, credits, unlimited_days, status, "
            "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (fact.out_trade_no, fact.openid, fact.product, fact.amount, fact.credits, fact.unlimited_days,
             PENDING, fact.at, fact.expires_at or None))

    async def _order_paid(self, fact: OrderPaid) -> None:
        await self.db.execute(
            "UPDATE orders SET status = ?, paid_at = ?, transaction_id = ? WHERE out_trade_no = ? AND status = ?",
            (PAID, fact.at, fact.transaction_id, fact.out_trade_no, PENDING))

    async def _credits_granted(self, fact: CreditsGranted) -> None:
        await self.db.execute("INSERT OR IGNORE INTO accounts (openid) VALUES (?)", (fact.openid,))
        # Unlimited time extends from the later of now-at-purchase and what is left: deterministic on replay.
        await self.db.execute(
            "UPDATE accounts SET credits = credits + ?, unlimited_until = CASE WHEN ? > 0 "
            "THEN MAX(unlimited_until, ?) + ? ELSE unlimited_until END WHERE openid = ?",
            (fact.credits, fact.unlimited_days, fact.at, fact.unlimited_days * DAY, fact.openid))
        await self.db.execute(
            "INSERT INTO credit_history (fact_id, openid, credits, unlimited_days, reason, ref, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (fact.dedup_id, fact.openid, fact.credits, fact.unlimited_days, fact.reason, fact.out_trade_no,
             fact.at))

    async def _order_closed(self, fact: OrderClosed) -> None:
        await self.db.execute("UPDATE orders SET status = ? WHERE out_trade_no = ? AND status = ?",
                              (CLOSED, fact.out_trade_no, PENDING))

    async def _refund_requested(self, fact: RefundRequested) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO refunds (out_trade_no, out_refund_no, amount, status, requested_at) "
            "VALUES (?, ?, ?, ?, ?)", (fact.out_trade_no, fact.out_refund_no, fact.amount, "PROCESSING", fact.at))

    async def _order_refunded(self, fact: OrderRefunded) -> None:
        await self.db.execute("UPDATE orders SET status = ? WHERE out_trade_no = ? AND status = ?",
                              (REFUNDED, fact.out_trade_no, PAID))
        await self.db.execute("UPDATE refunds SET status = ?, refund_id = ?, refunded_at = ? "
                              "WHERE out_trade_no = ?", ("SUCCESS", fact.refund_id, fact.at, fact.out_trade_no))

    async def _credits_revoked(self, fact: CreditsRevoked) -> None:
        await self.db.execute("INSERT OR IGNORE INTO accounts (openid) VALUES (?)", (fact.openid,))
        # The amount was decided by billing (see Refunds.apply); MAX only guards the invariant.
        await self.db.execute(
            "UPDATE accounts SET credits = MAX(0, credits - ?), unlimited_until = unlimited_until - ? "
            "WHERE openid = ?", (fact.credits, fact.unlimited_days * DAY, fact.openid))
        await self.db.execute(
            "INSERT INTO credit_history (fact_id, openid, credits, unlimited_days, reason, ref, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (fact.dedup_id, fact.openid, -fact.credits, -fact.unlimited_days, fact.reason, fact.out_trade_no,
             fact.at))

    async def _use_reserved(self, fact: UseReserved) -> None:
        await self.db.execute("INSERT OR IGNORE INTO accounts (openid) VALUES (?)", (fact.openid,))
        await self.db.execute(
            "INSERT OR IGNORE INTO uses (task_id, openid, use, status, day, reserved_at) VALUES (?, ?, ?, ?, ?, ?)",
            (fact.task_id, fact.openid, fact.use, RESERVED, china_day(fact.at), fact.at))

    async def _use_released(self, fact: UseReleased) -> None:
        await self.db.execute("UPDATE uses SET status = ?, settled_at = ? WHERE task_id = ? AND status = ?",
                              (RELEASED, fact.at, fact.task_id, RESERVED))

    async def set_prepay(self, out_trade_no: str, prepay_id: str) -> None:
        async with self._lock:
            await self.db.execute("UPDATE orders SET prepay_id = ? WHERE out_trade_no = ?", (prepay_id, out_trade_no))
            await self.db.commit()

    # --- reading ------------------------------------------------------------------------------
    async def order(self, out_trade_no: str) -> Order | None:
        async with self.db.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE out_trade_no = ?",
                                   (out_trade_no,)) as cur:
            row = await cur.fetchone()
        return Order(*row) if row else None

    async def has_fact(self, fact_id: str) -> bool:
        async with self.db.execute("SELECT 1 FROM facts WHERE id = ?", (fact_id,)) as cur:
            return await cur.fetchone() is not None

    async def refund(self, out_trade_no: str) -> RefundRecord | None:
        async with self.db.execute(f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE out_trade_no = ?",
                                   (out_trade_no,)) as cur:
            row = await cur.fetchone()
        return RefundRecord(*row) if row else None

    async def refunds_processing(self, requested_before: float) -> list[RefundRecord]:
        """Refunds asked of WeChat before then whose success billing has not heard of."""
        async with self.db.execute(f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE status = ? AND requested_at < ? "
                                   "ORDER BY requested_at", ("PROCESSING", requested_before)) as cur:
            return [RefundRecord(*row) for row in await cur.fetchall()]

    async def refunds_unrevoked(self) -> list[RefundRecord]:
        """Refunded orders whose credits were not revoked (billing stopped between the two facts)."""
        async with self.db.execute(
                f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE status = ? AND NOT EXISTS "
                "(SELECT 1 FROM facts WHERE facts.id = ? || refunds.out_trade_no) ORDER BY refunded_at",
                ("SUCCESS", f"{CreditsRevoked.KIND}:")) as cur:
            return [RefundRecord(*row) for row in await cur.fetchall()]

    async def orders_ungranted(self) -> list[Order]:
        """Paid orders whose credits were not granted (billing stopped between the two facts)."""
        async with self.db.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE status = ? AND NOT EXISTS "
                "(SELECT 1 FROM facts WHERE facts.id = ? || orders.out_trade_no) ORDER BY paid_at",
                (PAID, f"{CreditsGranted.KIND}:")) as cur:
            return [Order(*row) for row in await cur.fetchall()]

    async def orders_pending(self, created_before: float) -> list[Order]:
        """Orders created before then that are neither paid nor closed."""
        async with self.db.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE status = ? AND created_at < ? "
                                   "ORDER BY created_at", (PENDING, created_before)) as cur:
            return [Order(*row) for row in await cur.fetchall()]

    async def account(self, openid: str) -> Account:
        async with self.db.execute("SELECT credits, unlimited_until FROM accounts WHERE openid = ?",
                                   (openid,)) as cur:
            row = await cur.fetchone()
        return Account(int(row[0]), float(row[1])) if row else Account()

    async def held(self, openid: str, since: float) -> int:
        """Credits held by this user's reservations made after ``since`` and not yet settled."""
        async with self.db.execute("SELECT COUNT(*) FROM uses WHERE openid = ? AND use = ? AND status = ? "
                                   "AND reserved_at > ?", (openid, USE_CREDIT, RESERVED, since)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def free_used(self, openid: str, day: str) -> int:
        """Free uses reserved or charged on ``day`` (a released one is given back)."""
        async with self.db.execute("SELECT COUNT(*) FROM uses WHERE openid = ? AND day = ? AND use = ? "
                                   "AND status != ?", (openid, day, USE_FREE, RELEASED)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def use(self, task_id: str) -> UseRecord | None:
        async with self.db.execute(f"SELECT {_USE_COLUMNS} FROM uses WHERE task_id = ?", (task_id,)) as cur:
            row = await cur.fetchone()
        return UseRecord(*row) if row else None

    async def orders_of(self, openid: str, limit: int = 100) -> list[Order]:
        async with self.db.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE openid = ? "
                                   "ORDER BY created_at DESC, out_trade_no DESC LIMIT ?", (openid, limit)) as cur:
            return [Order(*row) for row in await cur.fetchall()]

    async def uses_of(self, openid: str, limit: int = 100) -> list[UseRecord]:
        """Charged enhancements, newest first."""
        async with self.db.execute(
                f"SELECT {_USE_COLUMNS} FROM uses WHERE openid = ? AND status = ? "
                "ORDER BY settled_at DESC, task_id LIMIT ?", (openid, CHARGED, limit)) as cur:
            return [UseRecord(*row) for row in await cur.fetchall()]

    async def stats(self, since: float) -> Stats:
        """Orders by status (all time), and paid orders and amounts per China-time day since ``since``."""
        async with self.db.execute("SELECT status, COUNT(*) FROM orders GROUP BY status") as cur:
            by_status = {status: int(n) async for status, n in cur}
        days: dict[str, DaySales] = {}
        async with self.db.execute("SELECT paid_at, amount FROM orders WHERE paid_at IS NOT NULL AND paid_at >= ? "
                                   "AND status = ?", (since, PAID)) as cur:
            async for paid_at, amount in cur:
                day = days.get(china_day(paid_at)) or DaySales(china_day(paid_at), 0, 0)
                days[day.day] = DaySales(day.day, day.orders + 1, day.amount + int(amount))
        return Stats(by_status, sorted(days.values(), key=lambda d: d.day, reverse=True))

    async def snapshot(self) -> dict[str, Any]:
        """Everything the facts determine (for comparing a replayed ledger with the original)."""
        out: dict[str, Any] = {}
        for table, order_by in (("orders", "out_trade_no"), ("accounts", "openid"), ("credit_history", "fact_id"),
                                ("task_events", "task_id, kind"), ("uses", "task_id"),
                                ("refunds", "out_trade_no")):
            columns = "*" if table != "orders" else _ORDER_COLUMNS.replace(", prepay_id", "")
            async with self.db.execute(f"SELECT {columns} FROM {table} ORDER BY {order_by}") as cur:
                out[table] = [tuple(r) for r in await cur.fetchall()]
        return out


#: A billing fact's effects on the ledger, by fact type (``Ledger.apply_fact`` runs them in its transaction).
Effect = Callable[[Ledger, Any], Awaitable[None]]
EFFECTS: dict[type[BillingFact], Effect] = {
    OrderCreated: Ledger._order_created,
    OrderPaid: Ledger._order_paid,
    CreditsGranted: Ledger._credits_granted,
    OrderClosed: Ledger._order_closed,
    RefundRequested: Ledger._refund_requested,
    OrderRefunded: Ledger._order_refunded,
    CreditsRevoked: Ledger._credits_revoked,
    UseReserved: Ledger._use_reserved,
    UseReleased: Ledger._use_released,
}
