"""The original mini-program buys unchanged: its ``pay/create`` body ``{openid, total_fee, body, attach}``
creates an order for the product with exactly that price, WeChat's payment parameters come back in the
same ``pay_params``, and the credits land on that openid."""

from __future__ import annotations

import secrets

import httpx

from .support import BillingStack, account, sign_in
from .wechat_standin import WeChatStandIn


def legacy_create(bs: BillingStack, **body: object) -> httpx.Response:
    return httpx.post(f"{bs.url}/api/wechat/pay/create", json=body, timeout=30)


def test_the_original_body_buys_and_the_credits_land_on_that_openid(billing_stack: BillingStack,
                                                                    wechat: WeChatStandIn) -> None:
    bs = billing_stack
    openid = f"o{secrets.token_hex(12)}"
    # As the mini-program computed it: info.amount * 100 in JavaScript (9.9 * 100 = 990.0000000000001).
    r = legacy_create(bs, openid=openid, total_fee=9.9 * 100, body="基础包", attach="package_basic_1700000000000")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert set(data["pay_params"]) == {"appId", "timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert data["pay_params"]["package"].startswith("prepay_id=") and data["amount"] == 990
    assert wechat.post_notify(bs.notify_url, wechat.pay(data["out_trade_no"])).status_code == 204
    _, auth = sign_in(bs, wechat, openid)  # the same user signing in later sees what was bought
    assert account(bs, auth)["credits"] == 10


def test_an_amount_that_is_no_price_or_a_missing_field_is_a_clear_400(billing_stack: BillingStack) -> None:
    bs = billing_stack
    r = legacy_create(bs, openid=f"o{secrets.token_hex(12)}", total_fee=1234, body="x")
    assert r.status_code == 400 and "1234 fen is not the price of a product" in r.json()["error"], r.text
    assert r.json()["success"] is False
    missing = legacy_create(bs, total_fee=990, body="基础包")
    assert missing.status_code == 400 and "Missing product (or openid and total_fee)" in missing.json()["error"]
    assert legacy_create(bs, openid="o" * 28, total_fee=-5).status_code == 422
