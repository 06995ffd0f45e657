"""Orders, notifies and facts survive a NATS restart.

On a nats-server of its own (the session's is shared by every other test), with its own edge and
billing process: an order is created, NATS stops and starts again (same ports, passwords and
JetStream data), and the payment notify delivered afterwards pays the order exactly once; the
ledger's follower picks the stream up again where it was.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import nats
from bus import subjects
from bus.schemas import TaskEvent
from photoenhance.servers import EmbeddedNats, EmbeddedS3

from ..support import wait_until
from .support import (
    FREE_DAILY,
    BillingStack,
    create_order,
    facts_about,
    kinds,
    ledger_credits,
    query,
    reserve,
    running_billing,
    sign_in,
    task_recorded,
)
from .wechat_standin import WeChatStandIn

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_billing(own_nats: EmbeddedNats, s3_server: EmbeddedS3, wechat: WeChatStandIn, model_dir: Path,
                tmp_path: Path) -> Iterator[BillingStack]:
    with running_billing(own_nats, s3_server, wechat, model_dir, tmp_path / "stack") as bs:
        yield bs


def deliver(bs: BillingStack, wechat: WeChatStandIn, out_trade_no: str, timeout: float = 60) -> int:
    """Deliver the payment notify as WeChat does: again and again until it is accepted (WeChat retries a
    notify answered 5xx). Returns how many deliveries it took."""
    tries = 0

    def accepted() -> bool:
        nonlocal tries
        tries += 1
        r = wechat.post_notify(bs.notify_url, wechat.transaction(out_trade_no))
        assert r.status_code == 204 or r.status_code >= 500, r.text  # a 4xx would be a wrong refusal
        return r.status_code == 204

    wait_until(accepted, timeout, "the notify to be accepted after the NATS restart", interval=0.2)
    return tries


async def test_an_order_is_paid_once_across_a_nats_restart(own_nats: EmbeddedNats, own_billing: BillingStack,
                                                           wechat: WeChatStandIn) -> None:
    bs = own_billing
    openid, auth = sign_in(bs, wechat)
    no = create_order(bs, auth, "basic")["out_trade_no"]
    wechat.pay(no)  # the user pays while NATS is away

    await asyncio.to_thread(own_nats.stop)
    await asyncio.to_thread(own_nats.start)  # same ports, passwords and JetStream store

    await asyncio.to_thread(deliver, bs, wechat, no)
    # A duplicate after the recovery changes nothing.
    assert wechat.post_notify(bs.notify_url, wechat.transaction(no)).status_code == 204
    assert query(bs, auth, no).json()["data"]["status"] == "PAID"
    assert ledger_credits(bs, openid) == 10
    assert bs.billing.alive, bs.billing.log()[-3000:]

    nc = await nats.connect(**own_nats.connect_options("admin"))
    try:
        assert kinds(await asyncio.wait_for(facts_about(nc, no), 30)) == [
            "order_created", "order_paid", "credits_granted"]
        # The ledger's follower picked the stream up again: a task fact after the restart is charged
        # (to the credit billing reserved for it, once today's free uses are held).
        for _ in range(FREE_DAILY):
            assert (await reserve(nc, auth, secrets.token_hex(16))).use == "free"
        event = TaskEvent(task_id=secrets.token_hex(16), kind="completed", at=time.time(), owner=openid)
        assert (await reserve(nc, auth, event.task_id)).use == "credit"
        await nc.jetstream().publish(subjects.task_event("completed"), event.encode(),
                                     headers={subjects.MSG_ID_HEADER: event.dedup_id})
    finally:
        await nc.close()
    await asyncio.to_thread(wait_until, lambda: task_recorded(bs.db_path, event.task_id), 30,
                            "billing's follower to apply a fact published after the restart")
    assert ledger_credits(bs, openid) == 9
    account = await asyncio.to_thread(
        lambda: httpx.get(f"{bs.url}/api/wechat/account", headers=auth, timeout=30).json()["data"])
    assert account["credits"] == 9 and [o["out_trade_no"] for o in account["orders"]] == [no]
