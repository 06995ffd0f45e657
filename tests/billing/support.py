"""Helpers shared by billing's tests: the billing stack (an edge and a real ``photoenhance billing`` process),
what a mini-program or WeChat does over HTTP, what the ledger file and the stream hold, and the replay.

Test modules import these from here, never from one another; fixtures live in ``conftest.py``. The in-memory
stream is ``memory_stream``, the WeChat stand-in ``wechat_standin``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from billing.ledger import Ledger
from bus import subjects
from bus.billing import FACTS, UseReply, UseRequest
from photoenhance.servers import EmbeddedNats, EmbeddedS3

from ..support import ROOT, TEST_ENV, ServiceProcess, Stack, wait_until
from .wechat_standin import WeChatStandIn, china_time

#: Free enhancements a day in these tests (the default is 3): one, so the quota runs out quickly.
FREE_DAILY = 1


# --- the billing stack -------------------------------------------------------------------------------------
@dataclass
class BillingStack:
    """An edge and a billing process; ``restart_billing`` keeps the same database and settings."""

    stack: Stack
    billing: ServiceProcess
    db_path: Path

    @property
    def url(self) -> str:
        return self.stack.url

    @property
    def notify_url(self) -> str:
        return f"{self.url}/api/wechat/pay/notify"

    def wait_ready(self) -> None:
        """Billing is on the bus once the edge's bridge gets an answer other than 503 (no responders)."""
        def answered() -> bool:
            assert self.billing.alive, f"billing exited:\n{self.billing.log()[-3000:]}"
            r = httpx.post(f"{self.url}/api/wechat/auth/openid", json={"code": "readiness-probe"}, timeout=10)
            return r.status_code != 503

        wait_until(answered, 60, "billing to answer on the bus")

    def stop_billing(self) -> None:
        assert self.billing.stop() == 0, self.billing.log()[-3000:]

    def start_billing(self) -> None:
        self.billing.start()
        self.wait_ready()


@contextmanager
def running_billing(nats_server: EmbeddedNats, s3_server: EmbeddedS3, wechat: WeChatStandIn, model_dir: Path,
                    root: Path, **env: str) -> Iterator[BillingStack]:
    """An edge and a billing process (WeChat pointed at the stand-in) on the given servers."""
    # The session's model directory: Real-ESRGAN's converted weights are cached there once.
    stack = Stack(nats=nats_server, s3=s3_server, root=root, model_dir=model_dir, extra_env={**TEST_ENV, **env})
    db_path = root / "billing.sqlite3"
    billing: ServiceProcess | None = None
    try:
        stack.start_edge()
        billing_env = stack.env("billing", BILLING_DB=str(db_path), BILLING_SESSION_SECRET=secrets.token_hex(24),
                        BILLING_FREE_DAILY=str(FREE_DAILY),
                        **wechat.billing_env(root / "secrets", f"{stack.url}/api/wechat/pay/notify"))
        billing = ServiceProcess("billing", billing_env, root / "logs" / "billing.log").start()
        bs = BillingStack(stack=stack, billing=billing, db_path=db_path)
        bs.wait_ready()
        yield bs
    finally:
        if billing is not None:
            billing.stop()
        stack.stop()


# --- a mini-program user and WeChat, over HTTP ---------------------------------------------------------------
def sign_in(bs: BillingStack, wechat: WeChatStandIn, openid: str | None = None) -> tuple[str, dict[str, str]]:
    openid = openid or f"o{secrets.token_hex(12)}"
    r = httpx.post(f"{bs.url}/api/wechat/auth/openid", json={"code": wechat.login_code(openid)}, timeout=30)
    assert r.status_code == 200, r.text
    return openid, {"Authorization": f"Bearer {r.json()['data']['token']}"}


def create_order(bs: BillingStack, auth: dict[str, str], product: str = "basic") -> dict[str, Any]:
    r = httpx.post(f"{bs.url}/api/wechat/pay/create", json={"product": product}, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def query(bs: BillingStack, auth: dict[str, str], out_trade_no: str) -> httpx.Response:
    return httpx.get(f"{bs.url}/api/wechat/pay/query/{out_trade_no}", headers=auth, timeout=30)


def buy(bs: BillingStack, wechat: WeChatStandIn, auth: dict[str, str], product: str = "basic") -> str:
    """Create an order, pay it at the stand-in and deliver WeChat's signed notify."""
    no = create_order(bs, auth, product)["out_trade_no"]
    assert wechat.post_notify(bs.notify_url, wechat.pay(no)).status_code == 204
    return no


def account(bs: BillingStack, auth: dict[str, str]) -> dict[str, Any]:
    r = httpx.get(f"{bs.url}/api/wechat/account", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def claimed_paid(tx: dict[str, Any]) -> dict[str, Any]:
    """A forger's version of a transaction: says SUCCESS although nobody paid."""
    return {**tx, "trade_state": "SUCCESS", "transaction_id": "4200000000000000000000000001",
            "success_time": china_time(time.time()), "amount": {**tx["amount"], "payer_total": tx["amount"]["total"]}}


# --- the bus ----------------------------------------------------------------------------------------------
async def reserve(nc: Client, auth: dict[str, str], task_id: str) -> UseReply:
    """Hold one use for a task, as the edge does before it queues one: a worker's facts settle only this."""
    request = UseRequest(token=auth["Authorization"], task_id=task_id)
    reply = await nc.request(subjects.BILLING_USE_RESERVE, request.encode(), timeout=30,
                             headers={subjects.TYPE_HEADER: request.TYPE})
    return UseReply.decode(reply.data, subject=subjects.BILLING_USE_RESERVE)


async def facts_about(nc: Client, out_trade_no: str) -> list[tuple[str, dict[str, Any]]]:
    """Every billing fact in ``PE_EVENTS`` about one order: (type, fields), in stream order."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(subjects.BILLING_EVENTS_WILDCARD, stream=subjects.EVENTS_STREAM,
                                  config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE))
    try:
        out: list[tuple[str, dict[str, Any]]] = []
        pending = (await sub.consumer_info()).num_pending
        while pending:
            msgs = await sub.fetch(pending, timeout=5)
            pending -= len(msgs)
            for msg in msgs:
                fact = FACTS[msg.headers[subjects.TYPE_HEADER]].decode(msg.data)
                if getattr(fact, "out_trade_no", None) == out_trade_no:
                    out.append((fact.TYPE, fact.to_dict()))
        return out
    finally:
        await sub.unsubscribe()


def kinds(facts: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [t.rsplit(".", 1)[1] for t, _ in facts]


# --- the ledger ---------------------------------------------------------------------------------------------
async def use_of(ledger: Ledger, task_id: str) -> tuple[str, str, str] | None:
    """(openid, use, status) of a task's use, or None: what most assertions about a use compare."""
    use = await ledger.use(task_id)
    return (use.openid, use.use, use.status) if use else None


# --- the ledger file (billing stopped, or read alongside it) -------------------------------------------
def ledger_credits(bs: BillingStack, openid: str) -> int:
    with sqlite3.connect(bs.db_path) as db:
        row = db.execute("SELECT credits FROM accounts WHERE openid = ?", (openid,)).fetchone()
    return row[0] if row else 0


def task_recorded(db: Path, task_id: str) -> bool:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT 1 FROM task_events WHERE task_id = ?", (task_id,)).fetchone() is not None


async def snapshot(db: Path) -> dict[str, Any]:
    ledger = await Ledger.open(db)
    try:
        return await ledger.snapshot()
    finally:
        await ledger.close()


def delete_ledger(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


async def replay(bs: BillingStack) -> None:
    """``photoenhance billing replay`` with billing's own settings (billing must be stopped)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "photoenhance", "billing", "replay", cwd=ROOT, env={**os.environ, **bs.billing.env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()[-3000:]
