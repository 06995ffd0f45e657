"""The billing process on its own (issue 12): in WeChat Pay's certificate mode it verifies a notify signed
after a platform-certificate rotation, and its reconciler settles an order whose notify was lost and closes
one left unpaid past its expiry — with nobody asking. Real processes on a NATS server of their own (a second
billing on the session's bus would share its consumer), talking to a certificate-mode WeChat stand-in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from photoenhance.servers import EmbeddedNats, EmbeddedS3

from ..support import wait_until
from .support import BillingStack, create_order, ledger_credits, running_billing, sign_in
from .wechat_standin import WeChatStandIn

pytestmark = pytest.mark.timeout(180)

#: Seconds between reconciler passes, and an order's life at WeChat, short enough to watch both happen.
INTERVAL, EXPIRY = 1, 5


def order_status(db: Path, out_trade_no: str) -> str | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT status FROM orders WHERE out_trade_no = ?", (out_trade_no,)).fetchone()
    return row[0] if row else None


@pytest.fixture
def certified_stack(s3_server: EmbeddedS3, model_dir: Path, tmp_path: Path) -> Iterator[tuple[BillingStack,
                                                                                             WeChatStandIn]]:
    standin = WeChatStandIn(certificate_mode=True).start()
    try:
        with EmbeddedNats(tmp_path / "nats") as own_nats, running_billing(
                own_nats, s3_server, standin, model_dir, tmp_path / "stack",
                BILLING_RECONCILE_INTERVAL=str(INTERVAL), BILLING_ORDER_EXPIRY=str(EXPIRY)) as bs:
            yield bs, standin
    finally:
        standin.stop()


def test_billing_follows_a_certificate_rotation_and_reconciles_on_its_own(
        certified_stack: tuple[BillingStack, WeChatStandIn]) -> None:
    bs, wechat = certified_stack
    openid, auth = sign_in(bs, wechat)

    # WeChat rotates its platform certificate; the next thing billing hears signed with it is a notify.
    no = create_order(bs, auth)["out_trade_no"]
    old = wechat.serial
    assert wechat.rotate_platform_certificate() != old
    r = wechat.post_notify(bs.notify_url, wechat.pay(no))
    assert r.status_code == 204, r.text
    assert ledger_credits(bs, openid) == 10

    # A payment whose notify is lost, and an order nobody pays.
    paid = create_order(bs, auth)["out_trade_no"]
    wechat.pay(paid)
    unpaid = create_order(bs, auth)["out_trade_no"]
    wait_until(lambda: order_status(bs.db_path, paid) == "PAID" and ledger_credits(bs, openid) == 20, 30,
               "the reconciler to settle the paid order and grant its credits")
    wait_until(lambda: order_status(bs.db_path, unpaid) == "CLOSED", 30, "the reconciler to close the expired order")
    assert wechat.orders[unpaid]["trade_state"] == "CLOSED"
    assert not wechat.auth_failures
