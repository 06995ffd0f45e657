"""The ledger: an SQLite projection of the task facts on ``PE_EVENTS``.

Each fact is applied once, keyed by (task, kind), so a redelivered or replayed event
changes nothing. Payments and credits arrive with the billing issue; for now the ledger
counts completed and failed enhancements per owner.
"""

from __future__ import annotations

from pathlib import Path

import aiosqlite

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
"""


class Ledger:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

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

    async def apply(self, event: TaskEvent, stream_seq: int) -> bool:
        """Record a fact; False when it was already recorded (duplicate or redelivery)."""
        cur = await self.db.execute(
            "INSERT OR IGNORE INTO task_events (task_id, kind, owner, at, stream_seq) VALUES (?, ?, ?, ?, ?)",
            (event.task_id, event.kind, event.owner, event.at, stream_seq))
        await self.db.commit()
        return cur.rowcount == 1

    async def counts(self) -> dict[str, int]:
        async with self.db.execute("SELECT kind, COUNT(*) FROM task_events GROUP BY kind") as cur:
            return {kind: n async for kind, n in cur}
