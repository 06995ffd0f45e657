"""WeChat sign-in and payments end to end: HTTP → edge → NATS → billing (a real process with billing's
credentials) → the WeChat stand-in (real protocol: RSA signatures both ways, AES-256-GCM notifies).

A notify is believed only when signed by the platform key, fresh (within 5 minutes), decryptable
with the APIv3 key and matching an order of ours in appid, mchid, amount and payer; and a payment
is recorded once however many notifies report it at the same time.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from nats.aio.client import Client

from .support import BillingStack, claimed_paid, create_order, facts_about, kinds, ledger_credits, query, sign_in
from .wechat_standin import WeChatStandIn, new_key

pytestmark = pytest.mark.timeout(120)


# --- sign-in ---------------------------------------------------------------------------------------
def test_sign_in_gives_openid_and_our_token_never_the_session_key(billing_stack: BillingStack,
                                                                   wechat: WeChatStandIn) -> None:
    code = wechat.login_code("oUser_sign_in_1")
    r = httpx.post(f"{billing_stack.url}/api/wechat/auth/openid", json={"code": code}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert body["data"]["openid"] == "oUser_sign_in_1"
    assert body["data"]["token"].startswith("v1.oUser_sign_in_1.") and body["data"]["expires_at"] > time.time()
    assert "session_key" not in r.text

    again = httpx.post(f"{billing_stack.url}/api/wechat/auth/openid", json={"code": code}, timeout=30)
    assert again.status_code == 400 and "already used" in again.json()["error"]
    bad = httpx.post(f"{billing_stack.url}/api/wechat/auth/openid", json={"code": "nonsense"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["success"] is False
    log = billing_stack.billing.log()
    assert "jscode2session failed" in log  # the log is being written ...
    assert wechat.app_secret not in log and wechat.apiv3_key not in log  # ... and holds no secret


def test_pay_create_needs_a_valid_session_and_a_known_product(billing_stack: BillingStack,
                                                              wechat: WeChatStandIn) -> None:
    url = f"{billing_stack.url}/api/wechat/pay/create"
    assert httpx.post(url, json={"product": "basic"}, timeout=30).status_code == 401
    forged = {"Authorization": "Bearer v1.oSomeoneElse.9999999999.AAAA"}
    assert httpx.post(url, json={"product": "basic"}, headers=forged, timeout=30).status_code == 401
    _, auth = sign_in(billing_stack, wechat)
    r = httpx.post(url, json={"product": "gold"}, headers=auth, timeout=30)
    assert r.status_code == 400 and "basic" in r.json()["error"]
    # The client names a product; an amount it sends is not ours to take.
    r = httpx.post(url, json={"product": "basic", "total_fee": 1}, headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["data"]["amount"] == 990


def test_pay_create_returns_request_payment_parameters(billing_stack: BillingStack, wechat: WeChatStandIn) -> None:
    openid, auth = sign_in(billing_stack, wechat)
    order = create_order(billing_stack, auth, "premium")
    assert order["amount"] == 2990 and order["product"] == "premium"
    params = order["pay_params"]
    assert set(params) == {"appId", "timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["signType"] == "RSA" and params["appId"] == wechat.appid
    # WeChat knows the very order number the client got (the original sent WeChat another one).
    held = wechat.orders[order["out_trade_no"]]
    assert params["package"] == f"prepay_id={held['prepay_id']}"
    assert (held["total"], held["openid"]) == (2990, openid)
    # paySign is the merchant's RSA-SHA256 signature over appId, timeStamp, nonceStr, package.
    message = "\n".join([params["appId"], params["timeStamp"], params["nonceStr"], params["package"]]) + "\n"
    wechat.merchant_key.public_key().verify(base64.b64decode(params["paySign"]), message.encode(),
                                            padding.PKCS1v15(), hashes.SHA256())
    assert not wechat.auth_failures
    r = query(billing_stack, auth, order["out_trade_no"])
    assert r.status_code == 200 and r.json()["data"]["status"] == "PENDING"


# --- notifies --------------------------------------------------------------------------------------
async def test_five_concurrent_notifies_pay_the_order_once(billing_stack: BillingStack, wechat: WeChatStandIn,
                                                           admin_nc: Client) -> None:
    openid, auth = sign_in(billing_stack, wechat)
    order = create_order(billing_stack, auth, "basic")
    no = order["out_trade_no"]
    headers, body = wechat.notify(wechat.pay(no))

    async with httpx.AsyncClient(timeout=30) as client:
        answers = await asyncio.wait_for(asyncio.gather(*[
            client.post(billing_stack.notify_url + ("/" if i % 2 else ""), content=body, headers=headers)
            for i in range(5)]), 60)
    assert [a.status_code for a in answers] == [204] * 5, [a.text for a in answers]

    facts = await asyncio.wait_for(facts_about(admin_nc, no), 30)
    assert kinds(facts) == ["order_created", "order_paid", "credits_granted"]
    assert facts[1][1]["amount"] == 990 and facts[1][1]["transaction_id"] == wechat.orders[no]["transaction_id"]
    assert ledger_credits(billing_stack, openid) == 10

    # WeChat retries a notify it thinks was lost: still accepted, still one payment.
    late = wechat.post_notify(billing_stack.notify_url, wechat.transaction(no))
    assert late.status_code == 204
    assert kinds(await asyncio.wait_for(facts_about(admin_nc, no), 30)) == kinds(facts)
    view = query(billing_stack, auth, no).json()["data"]
    assert view["status"] == "PAID" and view["paid_at"] and view["transaction_id"]


@pytest.mark.parametrize("forgery", ["signature", "apiv3_key", "stale", "future"])
async def test_untrustworthy_notifies_are_rejected(billing_stack: BillingStack, wechat: WeChatStandIn,
                                                   admin_nc: Client, forgery: str) -> None:
    _, auth = sign_in(billing_stack, wechat)
    no = create_order(billing_stack, auth)["out_trade_no"]
    tx = claimed_paid(wechat.transaction(no))
    options: dict[str, Any] = {
        "signature": {"signing_key": new_key()},
        "apiv3_key": {"apiv3_key": secrets.token_hex(16)},
        # A minute beyond the 300 s window each way: a future stamp at +301 s fell inside the window
        # when a busy machine took more than a second between stamping and checking.
        "stale": {"timestamp": int(time.time()) - 360},
        "future": {"timestamp": int(time.time()) + 360},
    }[forgery]
    r = wechat.post_notify(billing_stack.notify_url, tx, **options)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["code"] == "FAIL" and r.json()["message"]
    assert kinds(await asyncio.wait_for(facts_about(admin_nc, no), 30)) == ["order_created"]
    # WeChat, asked, says nobody paid: the order stays pending.
    assert query(billing_stack, auth, no).json()["data"]["status"] == "PENDING"


async def test_a_notify_with_the_wrong_amount_is_rejected(billing_stack: BillingStack, wechat: WeChatStandIn,
                                                          admin_nc: Client) -> None:
    openid, auth = sign_in(billing_stack, wechat)
    no = create_order(billing_stack, auth, "premium")["out_trade_no"]
    tx = claimed_paid(wechat.transaction(no))
    tx["amount"] = {"total": 1, "payer_total": 1, "currency": "CNY", "payer_currency": "CNY"}
    r = wechat.post_notify(billing_stack.notify_url, tx)  # genuinely signed: only the amount is wrong
    assert r.status_code == 400 and "amount" in r.json()["message"]
    assert kinds(await asyncio.wait_for(facts_about(admin_nc, no), 30)) == ["order_created"]
    assert ledger_credits(billing_stack, openid) == 0


def test_a_notify_for_an_unknown_order_or_merchant_is_rejected(billing_stack: BillingStack,
                                                               wechat: WeChatStandIn) -> None:
    _, auth = sign_in(billing_stack, wechat)
    no = create_order(billing_stack, auth)["out_trade_no"]
    tx = claimed_paid(wechat.transaction(no))
    r = wechat.post_notify(billing_stack.notify_url, {**tx, "out_trade_no": "PE20260101000000DEADBEEF00000000"})
    assert r.status_code == 404 and r.json()["code"] == "FAIL"
    r = wechat.post_notify(billing_stack.notify_url, {**tx, "mchid": "1900000999"})
    assert r.status_code == 400
    r = wechat.post_notify(billing_stack.notify_url, {**tx, "appid": "wx0000000000000000"})
    assert r.status_code == 400


async def test_a_payment_whose_notify_was_lost_is_found_by_query(billing_stack: BillingStack,
                                                                 wechat: WeChatStandIn, admin_nc: Client) -> None:
    openid, auth = sign_in(billing_stack, wechat)
    no = create_order(billing_stack, auth, "basic")["out_trade_no"]
    wechat.pay(no)  # paid, but the notify never arrives (timeout): the client asks
    view = query(billing_stack, auth, no)
    assert view.status_code == 200 and view.json()["data"]["status"] == "PAID"
    assert ledger_credits(billing_stack, openid) == 10
    # The notify arriving late changes nothing.
    assert wechat.post_notify(billing_stack.notify_url, wechat.transaction(no)).status_code == 204
    assert kinds(await asyncio.wait_for(facts_about(admin_nc, no), 30)) == [
        "order_created", "order_paid", "credits_granted"]
    assert ledger_credits(billing_stack, openid) == 10


def test_only_the_owner_may_query_an_order(billing_stack: BillingStack, wechat: WeChatStandIn) -> None:
    _, auth = sign_in(billing_stack, wechat)
    no = create_order(billing_stack, auth)["out_trade_no"]
    _, other = sign_in(billing_stack, wechat)
    assert query(billing_stack, other, no).status_code == 404
    assert query(billing_stack, {}, no).status_code == 401
    assert query(billing_stack, auth, "not..valid").status_code in (400, 404)


# --- billing away and back --------------------------------------------------------------------------
def test_without_billing_the_edge_answers_503_at_once_and_orders_survive_a_restart(
        billing_stack: BillingStack, wechat: WeChatStandIn) -> None:
    openid, auth = sign_in(billing_stack, wechat)
    no = create_order(billing_stack, auth)["out_trade_no"]
    billing_stack.stop_billing()
    try:
        started = time.monotonic()
        r = httpx.post(f"{billing_stack.url}/api/wechat/pay/create", json={"product": "basic"}, headers=auth,
                       timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] and time.monotonic() - started < 1.0
        n = wechat.post_notify(billing_stack.notify_url, wechat.pay(no))
        assert n.status_code == 503 and n.json()["code"] == "FAIL"  # WeChat will retry
    finally:
        billing_stack.start_billing()
    # The retried notify after the restart finds the order and pays it.
    assert wechat.post_notify(billing_stack.notify_url, wechat.transaction(no)).status_code == 204
    assert query(billing_stack, auth, no).json()["data"]["status"] == "PAID"
    assert ledger_credits(billing_stack, openid) == 10
