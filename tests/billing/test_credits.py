"""Credits enforced by the service: the mini-program's journey over HTTP, on real processes (edge,
enhancer, billing), the real bus and storage, and the WeChat stand-in.

A session's enhancement is allowed only with an unlimited package, a free use left today, or a
credit; a use is reserved (a fact on ``PE_EVENTS``) before the task is queued, charged when the
``completed`` fact arrives and given back when the ``failed`` one does.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
import pytest
from PIL import Image

from billing.ledger import china_day

from ..support import ADMIN_TOKEN, ServiceProcess, encode, photo, wait_until
from .support import FREE_DAILY, BillingStack, account, buy, create_order, ledger_credits, query, sign_in
from .wechat_standin import WeChatStandIn

pytestmark = pytest.mark.timeout(300)


# --- helpers ---------------------------------------------------------------------------------------
def upload(bs: BillingStack, size: tuple[int, int] = (40, 40)) -> str:
    """A photo PUT to storage with a presigned URL, as the mini-program does; returns its file_key."""
    ticket = httpx.post(f"{bs.url}/api/v1/upload/presigned-url", json={"filename": "me.jpg"}, timeout=30).json()
    put = httpx.put(ticket["presigned_url"], content=encode(photo("astronaut", size=size)), timeout=30)
    assert put.status_code == 200, put.text
    return ticket["file_key"]


def process(bs: BillingStack, auth: dict[str, str], **options: Any) -> httpx.Response:
    body = {"file_key": upload(bs), "quality_level": "fast", "scale": 2, "tile_size": 0, **options}
    return httpx.post(f"{bs.url}/api/v1/single-process-uploaded-image", json=body, headers=auth, timeout=180)


def settled(bs: BillingStack, auth: dict[str, str], charged: int) -> dict[str, Any]:
    """The account once no use is held and ``charged`` enhancements are charged (billing follows the
    task facts asynchronously)."""
    seen: dict[str, Any] = {}

    def check() -> bool:
        seen.update(account(bs, auth))
        return seen["credits_reserved"] == 0 and len(seen["uses"]) == charged

    wait_until(check, 60, f"billing to settle the uses ({charged} charged)")
    return seen


# --- the journey -----------------------------------------------------------------------------------
def test_mini_program_journey_free_use_then_paid_credits(billing_stack: BillingStack, wechat: WeChatStandIn,
                                                         billing_enhancer: ServiceProcess) -> None:
    bs = billing_stack
    openid, auth = sign_in(bs, wechat)
    fresh = account(bs, auth)
    assert (fresh["openid"], fresh["credits"], fresh["unlimited"], fresh["free_left_today"]) == (
        openid, 0, False, FREE_DAILY)
    assert fresh["orders"] == [] and fresh["uses"] == []

    # Today's free use.
    r = process(bs, auth)
    assert r.status_code == 200, r.text
    free_task = r.json()["task_id"]
    after_free = settled(bs, auth, charged=1)
    assert after_free["free_left_today"] == 0 and after_free["credits"] == 0
    assert [(u["task_id"], u["use"]) for u in after_free["uses"]] == [(free_task, "free")]

    # Nothing left: refused before anything is queued, with a sentence.
    r = process(bs, auth)
    assert r.status_code == 402, r.text
    assert "buy a package" in r.json()["error"]

    # Buy the basic package (stand-in payment, signed notify): ten credits.
    no = buy(bs, wechat, auth, "basic")
    bought = account(bs, auth)
    assert bought["credits"] == 10
    assert [(o["out_trade_no"], o["status"], o["amount"]) for o in bought["orders"]] == [(no, "PAID", 990)]

    # An enhancement with the session: a result URL, and one credit used.
    r = process(bs, auth)
    assert r.status_code == 200, r.text
    body = r.json()
    result = httpx.get(body["cdn_url"], timeout=30)
    assert result.status_code == 200 and Image.open(io.BytesIO(result.content)).size == (80, 80)
    charged = settled(bs, auth, charged=2)
    assert charged["credits"] == 9 and ledger_credits(bs, openid) == 9
    assert [(u["task_id"], u["use"]) for u in charged["uses"]] == [(body["task_id"], "credit"), (free_task, "free")]

    # An enhancement this fleet cannot do (face restoration required, no worker with GFPGAN weights) is
    # refused before anything is reserved, and uses nothing.
    r = process(bs, auth, face_enhance=True)
    assert r.status_code == 503 and "restore faces" in r.json()["error"], r.text
    failed = settled(bs, auth, charged=2)
    assert failed["credits"] == 9 and ledger_credits(bs, openid) == 9


def test_sessions_are_checked_and_anonymous_use_is_untouched(billing_stack: BillingStack,
                                                             billing_enhancer: ServiceProcess) -> None:
    bs = billing_stack
    forged = {"Authorization": "Bearer v1.oSomeone.9999999999.AAAA"}
    for auth in (forged, {"Authorization": "Bearer nonsense"}):
        r = process(bs, auth)
        assert r.status_code == 401 and r.json()["error"], r.text
        files = {"file": ("me.jpg", encode(photo("astronaut", size=(40, 40))), "image/jpeg")}
        r = httpx.post(f"{bs.url}/api/v1/enhance", files=files, headers=auth, timeout=30)
        assert r.status_code == 401 and r.json()["error"], r.text
    assert httpx.get(f"{bs.url}/api/wechat/account", timeout=30).status_code == 401
    # No Authorization header: the web page's anonymous use, as before (its quota is a later concern).
    r = process(bs, {})
    assert r.status_code == 200 and r.json()["success"] is True, r.text


def test_concurrent_uploads_cannot_spend_the_last_use_twice(billing_stack: BillingStack, wechat: WeChatStandIn,
                                                            billing_enhancer: ServiceProcess) -> None:
    bs = billing_stack
    _, auth = sign_in(bs, wechat)
    keys = [upload(bs) for _ in range(3)]

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=180) as client:
            return await asyncio.gather(*[
                client.post(f"{bs.url}/api/v1/single-process-uploaded-image", headers=auth,
                            json={"file_key": key, "quality_level": "fast", "scale": 2, "tile_size": 0})
                for key in keys])

    answers = asyncio.run(race())
    assert sorted(a.status_code for a in answers) == [200] + [402] * 2, [a.text for a in answers]
    assert settled(bs, auth, charged=1)["free_left_today"] == 0


def test_unlimited_package_holders_are_always_allowed_while_it_lasts(
        billing_stack: BillingStack, wechat: WeChatStandIn, billing_enhancer: ServiceProcess) -> None:
    bs = billing_stack
    _, auth = sign_in(bs, wechat)
    no = buy(bs, wechat, auth, "unlimited")
    paid_at = query(bs, auth, no).json()["data"]["paid_at"]
    holder = account(bs, auth)
    assert holder["unlimited"] is True and holder["unlimited_until"] == pytest.approx(paid_at + 30 * 86400)
    for _ in range(FREE_DAILY + 1):  # past the free quota, with no credits
        r = process(bs, auth)
        assert r.status_code == 200, r.text
    used = settled(bs, auth, charged=FREE_DAILY + 1)
    assert {u["use"] for u in used["uses"]} == {"unlimited"}
    assert used["free_left_today"] == FREE_DAILY and used["credits"] == 0


def test_without_billing_a_session_gets_503_and_anonymous_use_goes_on(
        billing_stack: BillingStack, wechat: WeChatStandIn, billing_enhancer: ServiceProcess) -> None:
    bs = billing_stack
    _, auth = sign_in(bs, wechat)
    bs.stop_billing()
    try:
        r = process(bs, auth)
        assert r.status_code == 503 and r.headers["retry-after"] and "uses" in r.json()["error"], r.text
        r = process(bs, {})
        assert r.status_code == 200, r.text
    finally:
        bs.start_billing()
    assert process(bs, auth).status_code == 200


# --- orders and stats ------------------------------------------------------------------------------
def test_own_orders_newest_first_and_admin_stats(billing_stack: BillingStack, wechat: WeChatStandIn) -> None:
    bs = billing_stack
    stats_url = f"{bs.url}/api/wechat/pay/stats"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert httpx.get(stats_url, timeout=30).status_code == 401
    assert httpx.get(stats_url, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    before = httpx.get(stats_url, headers=admin, timeout=30).json()["data"]

    _, auth = sign_in(bs, wechat)
    first = create_order(bs, auth, "basic")["out_trade_no"]
    paid = buy(bs, wechat, auth, "premium")
    last = create_order(bs, auth, "unlimited")["out_trade_no"]
    _, stranger = sign_in(bs, wechat)

    r = httpx.get(f"{bs.url}/api/wechat/pay/orders", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert [(o["out_trade_no"], o["status"]) for o in r.json()["data"]["orders"]] == [
        (last, "PENDING"), (paid, "PAID"), (first, "PENDING")]
    assert httpx.get(f"{bs.url}/api/wechat/pay/orders", headers=stranger, timeout=30).json()["data"]["orders"] == []
    assert httpx.get(f"{bs.url}/api/wechat/pay/orders", timeout=30).status_code == 401

    after = httpx.get(stats_url, headers=admin, timeout=30).json()["data"]
    delta = {s: after["by_status"][s] - before["by_status"].get(s, 0) for s in after["by_status"]}
    assert delta == {"PENDING": 2, "PAID": 1, "CLOSED": 0, "REFUNDED": 0}
    day = china_day(query(bs, auth, paid).json()["data"]["paid_at"])

    def on(stats: dict[str, Any]) -> dict[str, int]:
        return next((d for d in stats["by_day"] if d["day"] == day), {"orders": 0, "amount": 0})

    assert (on(after)["orders"] - on(before)["orders"], on(after)["amount"] - on(before)["amount"]) == (1, 2990)
    assert after["paid_amount"] - before["paid_amount"] == 2990
    assert after["paid_amount"] == sum(d["amount"] for d in after["by_day"])
