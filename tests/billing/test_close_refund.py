"""Closing and refunding orders end to end: HTTP → edge → NATS → billing → the WeChat stand-in.

A closed order can never be paid (WeChat refuses it, and a notify claiming otherwise is rejected); a
refund is asked by an operator, and applied once, when WeChat's verified ``REFUND.SUCCESS`` notify
arrives, taking back what is left of the order's credits (never below zero), as a replay does too.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from billing.settings import WeChatSettings
from bus import subjects
from bus.schemas import TaskEvent
from bus.settings import SettingsError

from ..support import ADMIN_TOKEN, wait_until
from .support import (
    FREE_DAILY,
    BillingStack,
    account,
    buy,
    claimed_paid,
    create_order,
    delete_ledger,
    facts_about,
    kinds,
    ledger_credits,
    query,
    replay,
    reserve,
    sign_in,
    snapshot,
    task_recorded,
)
from .wechat_standin import WeChatStandIn, new_key

pytestmark = pytest.mark.timeout(180)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def close(bs: BillingStack, auth: dict[str, str], out_trade_no: str) -> httpx.Response:
    return httpx.post(f"{bs.url}/api/wechat/pay/close/{out_trade_no}", headers=auth, timeout=30)


def refund(bs: BillingStack, headers: dict[str, str], out_trade_no: str) -> httpx.Response:
    return httpx.post(f"{bs.url}/api/wechat/pay/refund/{out_trade_no}", headers=headers,
                      json={"reason": "测试退款"}, timeout=30)


def refund_notify_url(bs: BillingStack) -> str:
    return f"{bs.url}/api/wechat/pay/refund-notify"


def post_refund_notify(bs: BillingStack, headers: dict[str, str], body: bytes) -> httpx.Response:
    """Deliver a refund notify as WeChat's servers would."""
    return httpx.post(refund_notify_url(bs), content=body, headers=headers, timeout=30)


# --- close -------------------------------------------------------------------------------------------
async def test_a_closed_order_cannot_be_paid_and_a_late_notify_is_rejected(
        billing_stack: BillingStack, wechat: WeChatStandIn, admin_nc: Client) -> None:
    bs = billing_stack
    openid, auth = sign_in(bs, wechat)
    no = create_order(bs, auth)["out_trade_no"]
    _, other = sign_in(bs, wechat)
    assert close(bs, other, no).status_code == 404  # someone else's order is as unknown as a missing one
    assert close(bs, {}, no).status_code == 401

    r = close(bs, auth, no)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "CLOSED"
    assert wechat.orders[no]["trade_state"] == "CLOSED" and not wechat.auth_failures
    assert ("POST", f"/v3/pay/transactions/out-trade-no/{no}/close") in wechat.calls
    with pytest.raises(ValueError, match="closed"):
        wechat.pay(no)  # WeChat takes no payment for a closed order

    # A genuinely signed notify claiming it was paid anyway is refused, and changes nothing.
    late = wechat.post_notify(bs.notify_url, claimed_paid(wechat.transaction(no)))
    assert late.status_code == 409 and late.json()["code"] == "FAIL", late.text
    assert close(bs, auth, no).json()["data"]["status"] == "CLOSED"  # closing again is harmless
    facts = await asyncio.wait_for(facts_about(admin_nc, no), 30)
    assert kinds(facts) == ["order_created", "order_closed"]
    assert facts[1][1]["openid"] == openid
    assert query(bs, auth, no).json()["data"]["status"] == "CLOSED"
    assert ledger_credits(bs, openid) == 0

    paid = buy(bs, wechat, auth)
    r = close(bs, auth, paid)
    assert r.status_code == 409 and "PAID" in r.json()["error"]


async def test_closing_an_order_paid_meanwhile_records_the_payment(
        billing_stack: BillingStack, wechat: WeChatStandIn, admin_nc: Client) -> None:
    bs = billing_stack
    openid, auth = sign_in(bs, wechat)
    no = create_order(bs, auth)["out_trade_no"]
    wechat.pay(no)  # paid, and the notify not here yet, when the user closes it
    r = close(bs, auth, no)
    assert r.status_code == 409 and "paid" in r.json()["error"]
    assert kinds(await asyncio.wait_for(facts_about(admin_nc, no), 30)) == [
        "order_created", "order_paid", "credits_granted"]
    assert ledger_credits(bs, openid) == 10


def test_the_refund_notify_url_follows_the_notify_url() -> None:
    key = "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----"
    base = {"appid": "wx1", "mchid": "1", "app_secret": "s", "apiv3_key": "k" * 32, "private_key": key,
            "cert_serial_no": "AB"}
    derived = WeChatSettings(**base, notify_url="https://pe.example/api/wechat/pay/notify/")
    assert derived.refund_notify_url == "https://pe.example/api/wechat/pay/refund-notify"
    given = WeChatSettings(**base, notify_url="https://pe.example/wx", refund_notify_url="https://pe.example/wr")
    assert given.refund_notify_url == "https://pe.example/wr"
    with pytest.raises(SettingsError, match="WECHAT_REFUND_NOTIFY_URL"):
        WeChatSettings(**base, notify_url="https://pe.example/wx")


# --- refund ------------------------------------------------------------------------------------------
def test_only_an_admin_may_refund(billing_stack: BillingStack, wechat: WeChatStandIn) -> None:
    bs = billing_stack
    _, auth = sign_in(bs, wechat)
    no = buy(bs, wechat, auth)
    assert refund(bs, {}, no).status_code == 401
    assert refund(bs, auth, no).status_code == 401  # a user's session is not an admin token
    assert refund(bs, {"Authorization": "Bearer wrong-token"}, no).status_code == 401
    assert f"RF{no}" not in wechat.refunds  # WeChat was never asked
    assert query(bs, auth, no).json()["data"]["status"] == "PAID"
    assert refund(bs, ADMIN, "PE20260101000000DEADBEEF00000000").status_code == 404
    pending = create_order(bs, auth)["out_trade_no"]
    r = refund(bs, ADMIN, pending)
    assert r.status_code == 409 and "error" in r.json()


async def test_refund_is_applied_once_revokes_what_is_left_and_replays(
        billing_stack: BillingStack, wechat: WeChatStandIn, admin_nc: Client) -> None:
    bs = billing_stack
    openid, auth = sign_in(bs, wechat)
    no = buy(bs, wechat, auth)  # 10 credits
    # One credit is used: today's free use first, then a credit reserved (as the edge does) and its
    # enhancement's completed fact, as an enhancer publishes it.
    for _ in range(FREE_DAILY):
        assert (await reserve(admin_nc, auth, secrets.token_hex(16))).use == "free"
    event = TaskEvent(task_id=secrets.token_hex(16), kind="completed", at=time.time(), owner=openid)
    assert (await reserve(admin_nc, auth, event.task_id)).use == "credit"
    await admin_nc.jetstream().publish(subjects.task_event("completed"), event.encode(),
                                       headers={subjects.MSG_ID_HEADER: event.dedup_id})
    await asyncio.to_thread(wait_until, lambda: task_recorded(bs.db_path, event.task_id), 30,
                            "billing to follow the task fact")
    assert ledger_credits(bs, openid) == 9

    r = refund(bs, ADMIN, no)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["amount"] == 990 and data["status"] == "PROCESSING"
    held = wechat.refunds[data["out_refund_no"]]
    assert held["notify_url"] == refund_notify_url(bs) and held["refund"] == held["total"] == 990
    assert refund(bs, ADMIN, no).json()["data"]["out_refund_no"] == data["out_refund_no"]  # idempotent
    assert query(bs, auth, no).json()["data"]["status"] == "PAID"  # until WeChat says the money went back

    headers, body = wechat.refund_notify(wechat.refund_succeeded(data["out_refund_no"]))
    async with httpx.AsyncClient(timeout=30) as client:
        answers = await asyncio.wait_for(asyncio.gather(*[
            client.post(refund_notify_url(bs) + ("/" if i % 2 else ""), content=body, headers=headers)
            for i in range(5)]), 60)
    assert [a.status_code for a in answers] == [204] * 5, [a.text for a in answers]

    facts = await asyncio.wait_for(facts_about(admin_nc, no), 30)
    assert kinds(facts) == ["order_created", "order_paid", "credits_granted", "refund_requested",
                            "order_refunded", "credits_revoked"]
    assert facts[5][1]["credits"] == 9  # what was left of the 10: the used one stays used
    assert ledger_credits(bs, openid) == 0
    assert query(bs, auth, no).json()["data"]["status"] == "REFUNDED"
    # WeChat retries the notify later: accepted, nothing changes.
    headers, body = wechat.refund_notify(wechat.refund_succeeded(data["out_refund_no"]))
    assert post_refund_notify(bs, headers, body).status_code == 204
    assert kinds(await asyncio.wait_for(facts_about(admin_nc, no), 30)) == kinds(facts)
    after = account(bs, auth)
    assert after["credits"] == 0 and no not in [o["out_trade_no"] for o in after["orders"]]

    # The ledger rebuilt from the stream says the same.
    bs.stop_billing()
    try:
        original = await snapshot(bs.db_path)
        delete_ledger(bs.db_path)
        await replay(bs)
        assert await snapshot(bs.db_path) == original
    finally:
        bs.start_billing()
    assert ledger_credits(bs, openid) == 0


@pytest.mark.parametrize("forgery", ["signature", "stale", "amount", "unknown_refund", "unrequested"])
async def test_untrustworthy_refund_notifies_are_rejected(billing_stack: BillingStack, wechat: WeChatStandIn,
                                                          admin_nc: Client, forgery: str) -> None:
    bs = billing_stack
    openid, auth = sign_in(bs, wechat)
    no = buy(bs, wechat, auth)
    out_refund_no = f"RF{no}"
    if forgery != "unrequested":
        assert refund(bs, ADMIN, no).status_code == 200
        resource = wechat.refund_succeeded(out_refund_no)
    else:  # WeChat never heard of this refund from us: a forger builds it
        resource = {"mchid": wechat.mchid, "out_trade_no": no, "transaction_id": "4200", "out_refund_no": out_refund_no,
                    "refund_id": "50300000000000000000000001", "refund_status": "SUCCESS",
                    "success_time": "2026-11-28T12:00:00+08:00",
                    "amount": {"total": 990, "refund": 990, "payer_total": 990, "payer_refund": 990}}
    options: dict[str, Any] = {}
    if forgery == "signature":
        options = {"signing_key": new_key()}
    elif forgery == "stale":
        options = {"timestamp": int(time.time()) - 301}
    elif forgery == "amount":
        resource = {**resource, "amount": {**resource["amount"], "refund": 1000, "total": 1000}}
    elif forgery == "unknown_refund":
        resource = {**resource, "out_refund_no": "RF-somebody-elses"}
    headers, body = wechat.refund_notify(resource, **options)
    r = post_refund_notify(bs, headers, body)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["code"] == "FAIL" and r.json()["message"]
    assert "order_refunded" not in kinds(await asyncio.wait_for(facts_about(admin_nc, no), 30))
    assert ledger_credits(bs, openid) == 10
    # A payment notify is not a refund notify, nor the other way round.
    pay_headers, pay_body = wechat.notify(wechat.transaction(no))
    assert post_refund_notify(bs, pay_headers, pay_body).status_code == 400
