"""The ledger: an SQLite projection of the facts on ``PE_EVENTS`` (orders, payments, credits, tasks).

Every fact is applied at most once, keyed by its de-duplication id, inside one transaction with
its effects; so a fact seen twice (published, then followed from the stream; redelivered; replayed)
changes nothing the second time, and a ledger rebuilt from the first event equals the original.
The one column that is not a fact is an order's ``prepay_id`` (WeChat's handle, re-obtainable).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from bus.billing import PAID, PENDING, BillingFact, CreditsGranted, OrderCreated, OrderPaid
from bus.schemas import TaskEvent

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
    prepay_id TEXT
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
"""

DAY = 86400.0


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
    prepay_id: str | None


_ORDER_COLUMNS = ("out_trade_no, openid, product, amount, credits, unlimited_days, status, "
                  "created_at, paid_at, transaction_id, prepay_id")


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
        await db.commit()
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    # --- applying facts -----------------------------------------------------------------------
    async def apply(self, event: TaskEvent, stream_seq: int) -> bool:
        """Record a task fact; False when it was already recorded (duplicate or redelivery)."""
        async with self._lock:
            cur = await self.db.execute(
                "INSERT OR IGNORE INTO task_events (task_id, kind, owner, at, stream_seq) VALUES (?, ?, ?, ?, ?)",
                (event.task_id, event.kind, event.owner, event.at, stream_seq))
            await self.db.commit()
            return cur.rowcount == 1

    async def apply_fact(self, fact: BillingFact, stream_seq: int | None) -> bool:
        """Apply a billing fact and its effects atomically; False when it was applied before."""
        async with self._lock:
            try:
                cur = await self.db.execute("INSERT OR IGNORE INTO facts (id, type, stream_seq) VALUES (?, ?, ?)",
                                            (fact.dedup_id, fact.TYPE, stream_seq))
                if cur.rowcount != 1:
                    await self.db.rollback()
                    return False
                await self._effects(fact)
                await self.db.commit()
                return True
            except BaseException:
                await self.db.rollback()
                raise

    async def _effects(self, fact: BillingFact) -> None:
        if isinstance(fact, OrderCreated):
            await self.db.execute(
                "INSERT OR IGNORE INTO orders (out_trade_no, openid, product, amount, credits, unlimited_days, status, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (fact.out_trade_no, fact.openid, fact.product, fact.amount, fact.credits, fact.unlimited_days,
                 PENDING, fact.at))
        elif isinstance(fact, OrderPaid):
            await self.db.execute(
                "UPDATE orders SET status = ?, paid_at = ?, transaction_id = ? WHERE out_trade_no = ? AND status = ?",
                (PAID, fact.at, fact.transaction_id, fact.out_trade_no, PENDING))
        elif isinstance(fact, CreditsGranted):
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

    async def account(self, openid: str) -> tuple[int, float]:
        """(credits, unlimited_until) of one user."""
        async with self.db.execute("SELECT credits, unlimited_until FROM accounts WHERE openid = ?",
                                   (openid,)) as cur:
            row = await cur.fetchone()
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    async def counts(self) -> dict[str, int]:
        async with self.db.execute("SELECT kind, COUNT(*) FROM task_events GROUP BY kind") as cur:
            return {kind: n async for kind, n in cur}

    async def snapshot(self) -> dict[str, Any]:
        """Everything the facts determine (for comparing a replayed ledger with the original)."""
        out: dict[str, Any] = {}
        for table, order_by in (("orders", "out_trade_no"), ("accounts", "openid"), ("credit_history", "fact_id"),
                                ("task_events", "task_id, kind")):
            columns = "*" if table != "orders" else _ORDER_COLUMNS.replace(", prepay_id", "")
            async with self.db.execute(f"SELECT {columns} FROM {table} ORDER BY {order_by}") as cur:
                out[table] = [tuple(r) for r in await cur.fetchall()]
        return out
