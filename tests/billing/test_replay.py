"""The ledger is a projection of ``PE_EVENTS``: deleted after a realistic run and rebuilt by
``photoenhance billing replay`` from the first event, it equals the original exactly."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx
import pytest
from nats.aio.client import Client

from bus import subjects
from bus.schemas import TaskEvent

from ..support import wait_until
from .support import (
    BillingStack,
    claimed_paid,
    create_order,
    delete_ledger,
    ledger_credits,
    query,
    replay,
    reserve,
    sign_in,
    snapshot,
    task_recorded,
)
from .wechat_standin import WeChatStandIn

pytestmark = pytest.mark.timeout(180)


async def realistic_run(bs: BillingStack, wechat: WeChatStandIn, nc: Client) -> dict[str, int]:
    """Three users buy every product; duplicates, a forgery, a lost notify, an unpaid order, a task fact
    and the same fact redelivered. (Refunds replay in test_close_refund.py.)"""
    credits: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for product, expected in (("basic", 10), ("premium", 100), ("unlimited", 0)):
            openid, auth = sign_in(bs, wechat)
            no = create_order(bs, auth, product)["out_trade_no"]
            headers, body = wechat.notify(wechat.pay(no))
            answers = await asyncio.gather(*[client.post(bs.notify_url, content=body, headers=headers)
                                             for _ in range(3)])
            assert {a.status_code for a in answers} == {204}
            credits[openid] = expected
        # A second purchase by the last user, found by query (its notify was lost).
        no = create_order(bs, auth, "basic")["out_trade_no"]
        wechat.pay(no)
        assert query(bs, auth, no).json()["data"]["status"] == "PAID"
        credits[openid] += 10
        # A forged notify for an unpaid order, and the order left pending.
        pending = create_order(bs, auth, "premium")["out_trade_no"]
        forged = wechat.post_notify(bs.notify_url, claimed_paid(wechat.transaction(pending)),
                                    timestamp=int(time.time()) - 3600)
        assert forged.status_code == 400
    # An enhancement: its use reserved (as the edge does), then its fact, as an enhancer publishes it.
    event = TaskEvent(task_id=secrets.token_hex(16), kind="completed", at=time.time(), owner=openid)
    assert (await reserve(nc, auth, event.task_id)).use == "unlimited"
    await nc.jetstream().publish(subjects.task_event("completed"), event.encode(),
                                 headers={subjects.MSG_ID_HEADER: event.dedup_id})
    await asyncio.to_thread(wait_until, lambda: task_recorded(bs.db_path, event.task_id), 30,
                            "billing to follow the task fact")
    # The same fact delivered again past JetStream's de-duplication window (a new message id): the
    # ledger applies each task once, so nothing changes — live or on replay.
    await nc.jetstream().publish(subjects.task_event("completed"), event.encode(),
                                 headers={subjects.MSG_ID_HEADER: f"{event.dedup_id}:redelivered"})
    await nc.flush()
    return credits


async def test_replay_rebuilds_the_ledger_exactly(billing_stack: BillingStack, wechat: WeChatStandIn,
                                                  admin_nc: Client) -> None:
    credits = await asyncio.wait_for(realistic_run(billing_stack, wechat, admin_nc), 120)
    billing_stack.stop_billing()
    try:
        original = await snapshot(billing_stack.db_path)
        assert {o: c for o, c, _ in original["accounts"] if o in credits} == credits
        delete_ledger(billing_stack.db_path)
        await replay(billing_stack)

        rebuilt = await snapshot(billing_stack.db_path)
        assert rebuilt == original
        assert len(rebuilt["orders"]) >= 5 and rebuilt["task_events"]
        assert any(use[3] == "charged" for use in rebuilt["uses"])  # enhancements charged, replayed alike
    finally:
        billing_stack.start_billing()
    # Billing runs on the rebuilt ledger.
    for openid, expected in credits.items():
        assert ledger_credits(billing_stack, openid) == expected
