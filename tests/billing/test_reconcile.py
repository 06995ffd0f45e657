"""Billing finishes what a crash or a lost notify left undone, and survives a platform-certificate rotation
(issue 12), in process against the WeChat stand-in: billing's real rooms (``Rooms.open``), ledger and WeChat
client, with ``PE_EVENTS`` in memory (``memory_stream``), so no NATS server is needed.

"Billing stops" is ``Crash`` raised where a fact would be published (the facts before it are stored, none
after), or WeChat failing the call; "billing restarts" is new rooms on the same ledger file and stream.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest

from billing import tokens
from billing.errors import BillingError, NotifyRejected
from billing.facts import Facts
from billing.ledger import Ledger
from billing.rooms import Rooms
from billing.settings import BillingSettings, WeChatSettings
from billing.wechat import WeChat
from bus.billing import NotifyRequest, PayCreateRequest, RefundRequest
from bus.settings import NatsSettings

from .memory_stream import Crash, MemoryStream, replayed
from .wechat_standin import WeChatStandIn, new_key, private_pem, public_pem

pytestmark = pytest.mark.timeout(120)

SECRET = secrets.token_hex(16)
#: How long an order may be paid, and how long billing waits for a notify before asking WeChat.
EXPIRY, INTERVAL = 600.0, 60.0


def wechat_settings(standin: WeChatStandIn, root: Path) -> WeChatSettings:
    """What ``WeChatStandIn.billing_env`` tells a billing process, as settings."""
    keys = ({"cert_dir": str(root / "platform-certificates")} if standin.certificate_mode else
            {"public_key": public_pem(standin.platform_key), "public_key_id": standin.public_key_id})
    return WeChatSettings(appid=standin.appid, mchid=standin.mchid, app_secret=standin.app_secret,
                          apiv3_key=standin.apiv3_key, private_key=private_pem(standin.merchant_key),
                          cert_serial_no=standin.merchant_serial, notify_url="https://pe.example/api/wechat/pay/notify",
                          pay_api=standin.url, login_api=standin.url, **keys)


@asynccontextmanager
async def running(standin: WeChatStandIn, root: Path, stream: MemoryStream) -> AsyncIterator[tuple[Rooms, Ledger]]:
    """Billing as its process holds it (ledger file, WeChat client, facts on ``stream``); leaving stops it."""
    settings = BillingSettings(nats=NatsSettings(), db_path=root / "ledger.sqlite3",
                               wechat=wechat_settings(standin, root), session_secret=SECRET,
                               order_expiry=EXPIRY, reconcile_interval=INTERVAL)
    ledger = await Ledger.open(settings.db_path)
    try:
        async with WeChat(cast(WeChatSettings, settings.wechat)) as wechat:
            yield Rooms.open(settings, ledger, Facts(cast(Any, stream), ledger), wechat), ledger
    finally:
        await ledger.close()


def bearer(openid: str) -> str:
    return "Bearer " + tokens.issue(SECRET.encode(), openid, 3600)[0]


async def order(rooms: Rooms, openid: str, product: str = "basic") -> str:
    return (await rooms.orders.create(PayCreateRequest(token=bearer(openid), product=product))).out_trade_no


async def buy(rooms: Rooms, standin: WeChatStandIn, openid: str) -> str:
    """An order paid in the mini-program and WeChat's notify delivered."""
    no = await order(rooms, openid)
    headers, body = standin.notify(standin.pay(no))
    assert (await rooms.orders.notify(NotifyRequest(headers=headers, body=body))).status == "PAID"
    return no


async def credits(ledger: Ledger, openid: str) -> int:
    return (await ledger.account(openid)).credits


async def same_as_replayed(ledger: Ledger, stream: MemoryStream, root: Path) -> bool:
    """The live ledger equals one rebuilt from the stream (so nothing was applied that is not a fact)."""
    return await ledger.snapshot() == await replayed(stream.messages, root / f"replay{time.time_ns()}.sqlite3")


# --- a refund stopped halfway ----------------------------------------------------------------------------
@pytest.mark.parametrize("retry", ["redelivered notify", "refund asked again", "start-up reconcile"])
async def test_a_refund_stopped_between_refunded_and_revoked_revokes_on_retry(
        wechat: WeChatStandIn, tmp_path: Path, retry: str) -> None:
    stream, openid = MemoryStream(), f"o{secrets.token_hex(8)}"
    async with running(wechat, tmp_path, stream) as (rooms, ledger):
        no = await buy(rooms, wechat, openid)
        assert (await rooms.refunds.refund(RefundRequest(out_trade_no=no))).status == "PROCESSING"
        headers, body = wechat.refund_notify(wechat.refund_succeeded(f"RF{no}"))
        stream.crash_before = "credits_revoked"
        with pytest.raises(Crash):
            await rooms.refunds.notify(NotifyRequest(headers=headers, body=body))
        assert (await ledger.order(no)).status == "REFUNDED"  # type: ignore[union-attr]
        assert await credits(ledger, openid) == 10  # the money went back, the credits did not

    async with running(wechat, tmp_path, stream) as (rooms, ledger):
        if retry == "redelivered notify":  # WeChat got no 2xx, so it sends the notify again
            headers, body = wechat.refund_notify(wechat.refund_succeeded(f"RF{no}"))
            assert (await rooms.refunds.notify(NotifyRequest(headers=headers, body=body))).status == "REFUNDED"
        elif retry == "refund asked again":  # the operator saw an error and asks again
            assert (await rooms.refunds.refund(RefundRequest(out_trade_no=no))).status == "SUCCESS"
        else:
            await rooms.reconciler.reconcile()
        assert await credits(ledger, openid) == 0
        assert stream.kinds() == ["order_created", "order_paid", "credits_granted", "refund_requested",
                                  "order_refunded", "credits_revoked"]
        await rooms.reconciler.reconcile()  # nothing left to do: nothing more recorded
        assert len(stream.kinds()) == 6
        assert await same_as_replayed(ledger, stream, tmp_path)


@pytest.mark.parametrize("retry", ["refund asked again", "reconciler"])
async def test_a_refund_recorded_but_never_received_by_wechat_is_asked_again(
        wechat: WeChatStandIn, tmp_path: Path, retry: str) -> None:
    stream, openid = MemoryStream(), f"o{secrets.token_hex(8)}"
    async with running(wechat, tmp_path, stream) as (rooms, ledger):
        no = await buy(rooms, wechat, openid)
        wechat.unavailable.add("refund")  # WeChat fails the call: billing has recorded the refund, WeChat not
        try:
            with pytest.raises(BillingError):
                await rooms.refunds.refund(RefundRequest(out_trade_no=no))
        finally:
            wechat.unavailable.discard("refund")
        assert stream.kinds()[-1] == "refund_requested" and f"RF{no}" not in wechat.refunds

        if retry == "refund asked again":
            assert (await rooms.refunds.refund(RefundRequest(out_trade_no=no))).status == "PROCESSING"
        else:
            await rooms.reconciler.reconcile(now=time.time())  # not overdue yet: WeChat is not asked
            assert f"RF{no}" not in wechat.refunds
            await rooms.reconciler.reconcile(now=time.time() + INTERVAL + 1)
        assert wechat.refunds[f"RF{no}"]["refund"] == 990

        headers, body = wechat.refund_notify(wechat.refund_succeeded(f"RF{no}"))
        assert (await rooms.refunds.notify(NotifyRequest(headers=headers, body=body))).status == "REFUNDED"
        assert await credits(ledger, openid) == 0
        assert await same_as_replayed(ledger, stream, tmp_path)


async def test_a_refund_whose_notify_never_came_is_applied_by_the_reconciler(
        wechat: WeChatStandIn, tmp_path: Path) -> None:
    stream, openid = MemoryStream(), f"o{secrets.token_hex(8)}"
    async with running(wechat, tmp_path, stream) as (rooms, ledger):
        no = await buy(rooms, wechat, openid)
        await rooms.refunds.refund(RefundRequest(out_trade_no=no))
        await rooms.reconciler.reconcile(now=time.time() + INTERVAL + 1)
        assert (await ledger.order(no)).status == "PAID"  # type: ignore[union-attr]  # WeChat: PROCESSING
        wechat.refund_succeeded(f"RF{no}")  # the money went back; its notify is lost
        await rooms.reconciler.reconcile(now=time.time() + INTERVAL + 1)
        assert (await ledger.order(no)).status == "REFUNDED"  # type: ignore[union-attr]
        assert await credits(ledger, openid) == 0
        assert stream.kinds()[-2:] == ["order_refunded", "credits_revoked"]


@pytest.mark.parametrize("retry", ["redelivered notify", "start-up reconcile"])
async def test_a_payment_stopped_between_paid_and_granted_grants_on_retry(
        wechat: WeChatStandIn, tmp_path: Path, retry: str) -> None:
    stream, openid = MemoryStream(), f"o{secrets.token_hex(8)}"
    async with running(wechat, tmp_path, stream) as (rooms, ledger):
        no = await order(rooms, openid)
        headers, body = wechat.notify(wechat.pay(no))
        stream.crash_before = "credits_granted"
        with pytest.raises(Crash):
            await rooms.orders.notify(NotifyRequest(headers=headers, body=body))
        assert (await ledger.order(no)).status == "PAID"  # type: ignore[union-attr]
        assert await credits(ledger, openid) == 0

    async with running(wechat, tmp_path, stream) as (rooms, ledger):
        if retry == "redelivered notify":
            headers, body = wechat.notify(wechat.transaction(no))
            assert (await rooms.orders.notify(NotifyRequest(headers=headers, body=body))).status == "PAID"
        else:
            await rooms.reconciler.reconcile()
        assert await credits(ledger, openid) == 10
        assert stream.kinds() == ["order_created", "order_paid", "credits_granted"]
        assert await same_as_replayed(ledger, stream, tmp_path)


# --- pending orders ----------------------------------------------------------------------------------------
async def test_an_order_paid_without_a_notify_is_settled_by_the_reconciler(
        wechat: WeChatStandIn, tmp_path: Path) -> None:
    stream, openid = MemoryStream(), f"o{secrets.token_hex(8)}"
    async with running(wechat, tmp_path, stream) as (rooms, ledger):
        no = await order(rooms, openid)
        wechat.pay(no)  # paid in the mini-program; WeChat's notify never arrives
        await rooms.reconciler.reconcile(now=time.time())  # the notify is not overdue yet
        assert (await ledger.order(no)).status == "PENDING"  # type: ignore[union-attr]
        await rooms.reconciler.reconcile(now=time.time() + INTERVAL + 1)
        assert (await ledger.order(no)).status == "PAID"  # type: ignore[union-attr]
        assert await credits(ledger, openid) == 10
        # The notify arrives after all: nothing is granted twice.
        headers, body = wechat.notify(wechat.transaction(no))
        await rooms.orders.notify(NotifyRequest(headers=headers, body=body))
        assert await credits(ledger, openid) == 10
        assert stream.kinds() == ["order_created", "order_paid", "credits_granted"]


async def test_an_unpaid_order_is_closed_at_wechat_once_it_expires(wechat: WeChatStandIn, tmp_path: Path) -> None:
    stream, openid = MemoryStream(), f"o{secrets.token_hex(8)}"
    async with running(wechat, tmp_path, stream) as (rooms, ledger):
        no = await order(rooms, openid)
        placed = await ledger.order(no)
        assert placed is not None and placed.expires_at == pytest.approx(placed.created_at + EXPIRY)
        # WeChat was told when to stop taking payment (time_expire, China time).
        assert datetime.fromisoformat(wechat.orders[no]["time_expire"]).timestamp() == int(placed.expires_at)

        await rooms.reconciler.reconcile(now=placed.created_at + EXPIRY - 1)  # overdue notify, but still payable
        assert wechat.orders[no]["trade_state"] == "NOTPAY"
        assert (await ledger.order(no)).status == "PENDING"  # type: ignore[union-attr]

        await rooms.reconciler.reconcile(now=placed.created_at + EXPIRY + 1)
        assert wechat.orders[no]["trade_state"] == "CLOSED"
        assert ("POST", f"/v3/pay/transactions/out-trade-no/{no}/close") in wechat.calls
        assert (await ledger.order(no)).status == "CLOSED"  # type: ignore[union-attr]
        assert stream.kinds() == ["order_created", "order_closed"]
        with pytest.raises(ValueError, match="closed"):
            wechat.pay(no)
        assert await same_as_replayed(ledger, stream, tmp_path)


async def test_an_order_wechat_never_heard_of_is_closed_once_it_expires(wechat: WeChatStandIn, tmp_path: Path) -> None:
    """Billing recorded the order, then WeChat failed the prepay: nobody can pay it, and it ends closed."""
    stream, openid = MemoryStream(), f"o{secrets.token_hex(8)}"
    async with running(wechat, tmp_path, stream) as (rooms, ledger):
        wechat.unavailable.add("jsapi")
        try:
            with pytest.raises(BillingError):
                await order(rooms, openid)
        finally:
            wechat.unavailable.discard("jsapi")
        [pending] = await ledger.orders_pending(time.time() + 1)
        assert pending.openid == openid and pending.out_trade_no not in wechat.orders
        await rooms.reconciler.reconcile(now=pending.created_at + EXPIRY - 1)
        assert (await ledger.order(pending.out_trade_no)).status == "PENDING"  # type: ignore[union-attr]
        await rooms.reconciler.reconcile(now=pending.created_at + EXPIRY + 1)
        assert (await ledger.order(pending.out_trade_no)).status == "CLOSED"  # type: ignore[union-attr]


# --- platform-certificate rotation ---------------------------------------------------------------------------
@pytest.fixture
def certified() -> AsyncIterator[WeChatStandIn]:
    """A stand-in in certificate mode, of its own: these tests rotate its platform certificate."""
    standin = WeChatStandIn(certificate_mode=True).start()
    try:
        yield standin  # type: ignore[misc]
    finally:
        standin.stop()


async def test_a_notify_signed_with_a_rotated_platform_certificate_is_verified(
        certified: WeChatStandIn, tmp_path: Path) -> None:
    stream, openid = MemoryStream(), f"o{secrets.token_hex(8)}"
    async with running(certified, tmp_path, stream) as (rooms, ledger):
        first = await buy(rooms, certified, openid)  # verified with the certificate downloaded at start-up
        old_serial = certified.serial
        no = await order(rooms, openid)
        new_serial = certified.rotate_platform_certificate()
        assert new_serial != old_serial
        headers, body = certified.notify(certified.pay(no))
        assert headers["Wechatpay-Serial"] == new_serial
        assert (await rooms.orders.notify(NotifyRequest(headers=headers, body=body))).status == "PAID"
        assert await credits(ledger, openid) == 20
        assert (await ledger.order(first)).status == "PAID"  # type: ignore[union-attr]
        # Kept where wechatpayv3 loads certificates at start-up, so a restart verifies with it too.
        assert (tmp_path / "platform-certificates" / f"{new_serial}.pem").is_file()


async def test_an_unknown_serial_does_not_let_a_forgery_through_nor_hammer_wechat(
        certified: WeChatStandIn, tmp_path: Path) -> None:
    stream, openid = MemoryStream(), f"o{secrets.token_hex(8)}"
    async with running(certified, tmp_path, stream) as (rooms, ledger):
        no = await order(rooms, openid)
        serial = certified.rotate_platform_certificate()
        tx = certified.pay(no)
        downloads = certified.calls.count(("GET", "/v3/certificates"))
        forger = new_key()
        for _ in range(5):  # the new serial, signed by someone else: refreshed once, refused every time
            headers, body = certified.notify(tx, signing_key=forger)
            assert headers["Wechatpay-Serial"] == serial
            with pytest.raises(NotifyRejected) as refused:
                await rooms.orders.notify(NotifyRequest(headers=headers, body=body))
            assert refused.value.status == 401
        headers, body = certified.notify(tx, signing_key=forger)
        with pytest.raises(NotifyRejected):
            await rooms.orders.notify(NotifyRequest(headers={**headers, "Wechatpay-Serial": "ABCDEF0123"}, body=body))
        assert certified.calls.count(("GET", "/v3/certificates")) == downloads + 1
        assert (await ledger.order(no)).status == "PENDING"  # type: ignore[union-attr]
        # WeChat's genuine notify is verified with the certificate that refresh installed.
        headers, body = certified.notify(tx)
        assert (await rooms.orders.notify(NotifyRequest(headers=headers, body=body))).status == "PAID"
