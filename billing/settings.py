"""Billing settings, from the environment only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bus.settings import NatsSettings, env


@dataclass(frozen=True)
class BillingSettings:
    nats: NatsSettings
    #: The SQLite ledger: a projection of the PE_EVENTS stream, rebuildable by replay.
    db_path: Path = Path("var/billing.sqlite3")

    @classmethod
    def from_env(cls) -> BillingSettings:
        return cls(nats=NatsSettings.from_env("billing"),
                   db_path=Path(env("BILLING_DB", "var/billing.sqlite3") or "var/billing.sqlite3"))
