"""A stolen GPU-host credential moves no money: through the real bus, into the real billing process.

The thief may publish exactly what a worker publishes, task facts on ``pe.events.task.completed|failed``;
the stream stores them, and billing refuses every one that is not a plain task fact, and lets a task
fact settle only a use that billing itself reserved. (The bus refuses everything else: test_trust.py.)
"""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx
from nats.aio.client import Client

import nats
from bus import subjects
from bus.billing import CreditsGranted, OrderCreated, OrderPaid, UseReleased, UseReserved
from bus.schemas import TaskEvent

from .support import BillingStack, ledger_credits, sign_in
from .wechat_standin import WeChatStandIn


async def _applied(admin_nc: Client, seq: int) -> None:
    """Billing's follower has acknowledged every fact up to ``seq`` (it applies them in stream order)."""
    js = admin_nc.jetstream()
    for _ in range(300):
        info = await js.consumer_info(subjects.EVENTS_STREAM, subjects.LEDGER_CONSUMER)
        if info.ack_floor.stream_seq >= seq:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"billing did not reach stream seq {seq}")


async def _account(bs: BillingStack, auth: dict[str, str]) -> dict[str, object]:
    r = await asyncio.to_thread(httpx.get, f"{bs.url}/api/wechat/account", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def test_forged_facts_from_an_enhancer_credential_change_no_account(
        billing_stack: BillingStack, wechat: WeChatStandIn, admin_nc: Client) -> None:
    bs = billing_stack
    openid, auth = sign_in(bs, wechat)
    before = await _account(bs, auth)
    now, order, task = time.time(), f"forged{secrets.token_hex(8)}", secrets.token_hex(16)
    forged = [
        CreditsGranted(openid=openid, out_trade_no=order, credits=99_999, at=now, unlimited_days=365),
        OrderCreated(out_trade_no=order, openid=openid, product="basic", amount=1, at=now, credits=99_999),
        OrderPaid(out_trade_no=order, openid=openid, amount=1, transaction_id="4200000000", at=now),
        UseReserved(openid=openid, task_id=task, use="unlimited", at=now),
        UseReleased(openid=openid, task_id=task, at=now),
    ]
    thief = await nats.connect(**bs.stack.nats.connect_options("stolen-gpu", "enhancer"))
    try:
        js = thief.jetstream()
        last = 0
        for kind in ("completed", "failed"):
            for fact in forged:
                last = (await js.publish(subjects.task_event(kind), fact.encode())).seq  # stored, not believed
            # A task fact naming the victim as payer, for a task billing never reserved: it charges nobody.
            fake = TaskEvent(task_id=secrets.token_hex(16), kind=kind, at=now, owner=openid)
            last = (await js.publish(subjects.task_event(kind), fake.encode())).seq
    finally:
        await thief.close()
    await _applied(admin_nc, last)
    after = await _account(bs, auth)
    assert after == before
    assert ledger_credits(bs, openid) == 0
    orders = (await asyncio.to_thread(httpx.get, f"{bs.url}/api/wechat/pay/orders", headers=auth,
                                      timeout=30)).json()["data"]
    assert order not in str(orders)
    assert "refusing the message on pe.events.task.completed" in bs.billing.log()
