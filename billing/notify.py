"""Checking what WeChat says about a payment before any of it is believed.

``wechatpayv3`` verifies a notify's RSA signature and decrypts its resource, but it applies no
timestamp window, no de-duplication and no business checks; those are here. The same checks
apply to a transaction obtained by querying WeChat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import NotifyRejected
from .ledger import Order, RefundRecord
from .settings import WeChatSettings

SUCCESS = "SUCCESS"


@dataclass(frozen=True)
class Transaction:
    """The fields of a WeChat Pay transaction that decide whether an order is paid."""

    out_trade_no: str
    appid: str
    mchid: str
    trade_state: str
    amount: int
    currency: str
    openid: str
    transaction_id: str
    #: WeChat's ``success_time`` as a Unix time (0 when not paid).
    success_at: float


def lower_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def check_timestamp(headers: dict[str, str], window: float, now: float | None = None) -> None:
    """Reject a notify stamped more than ``window`` seconds from our clock (a replay, or a stale copy)."""
    raw = headers.get("wechatpay-timestamp", "")
    if not raw.isdigit():
        raise NotifyRejected(400, "The notify has no valid Wechatpay-Timestamp.")
    if abs((now if now is not None else time.time()) - int(raw)) > window:
        raise NotifyRejected(400, "The notify's timestamp is too far from now; refusing a stale or replayed notify.")


def parse_transaction(resource: dict[str, Any]) -> Transaction:
    """The transaction inside a decrypted notify (or a query answer); malformed → rejected."""
    try:
        amount = resource["amount"]
        success = resource.get("success_time")
        tx = Transaction(
            out_trade_no=str(resource["out_trade_no"]), appid=str(resource["appid"]), mchid=str(resource["mchid"]),
            trade_state=str(resource["trade_state"]), amount=amount["total"], currency=str(amount.get("currency", "")),
            openid=str((resource.get("payer") or {}).get("openid", "")),
            transaction_id=str(resource.get("transaction_id") or ""),
            success_at=datetime.fromisoformat(success).timestamp() if success else 0.0)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise NotifyRejected(400, "The transaction is malformed.") from e
    if not isinstance(tx.amount, int) or isinstance(tx.amount, bool):
        raise NotifyRejected(400, "The transaction's amount is not an integer number of fen.")
    return tx


def check_transaction(tx: Transaction, order: Order | None, wechat: WeChatSettings) -> Order:
    """The order this transaction pays, after checking it matches in every respect."""
    if tx.appid != wechat.appid or tx.mchid != wechat.mchid:
        raise NotifyRejected(400, "The transaction is for another merchant or app.")
    if order is None:
        raise NotifyRejected(404, "No such order.")
    if tx.amount != order.amount or tx.currency != "CNY":
        raise NotifyRejected(400, f"The amount paid ({tx.amount} {tx.currency}) is not the order's amount.")
    if tx.openid and tx.openid != order.openid:
        raise NotifyRejected(400, "The payer is not the order's owner.")
    if tx.trade_state == SUCCESS and not tx.transaction_id:
        raise NotifyRejected(400, "A successful transaction without a transaction id.")
    return order


@dataclass(frozen=True)
class Refund:
    """The fields of a WeChat refund notify's resource that decide whether an order is refunded."""

    mchid: str
    out_trade_no: str
    out_refund_no: str
    refund_id: str
    refund_status: str
    total: int
    refund: int
    #: WeChat's ``success_time`` as a Unix time (0 when not refunded).
    success_at: float


def parse_refund(resource: dict[str, Any]) -> Refund:
    """The refund inside a decrypted refund notify; malformed → rejected."""
    try:
        amount = resource["amount"]
        success = resource.get("success_time")
        refund = Refund(
            mchid=str(resource["mchid"]), out_trade_no=str(resource["out_trade_no"]),
            out_refund_no=str(resource["out_refund_no"]), refund_id=str(resource.get("refund_id") or ""),
            refund_status=str(resource["refund_status"]), total=amount["total"], refund=amount["refund"],
            success_at=datetime.fromisoformat(success).timestamp() if success else 0.0)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise NotifyRejected(400, "The refund is malformed.") from e
    for value in (refund.total, refund.refund):
        if not isinstance(value, int) or isinstance(value, bool):
            raise NotifyRejected(400, "The refund's amounts are not integer numbers of fen.")
    return refund


def parse_refund_query(answer: dict[str, Any], mchid: str) -> Refund:
    """A refund query's answer, read as a refund notify's resource: it names its state ``status``, and no
    merchant (the merchant is the one who asked, under its own signature)."""
    return parse_refund({**answer, "mchid": mchid, "refund_status": answer.get("status")})


def check_refund(refund: Refund, order: Order | None, requested: RefundRecord | None,
                 wechat: WeChatSettings) -> Order:
    """The order this refund returns money for, after checking it matches a refund we asked for."""
    if refund.mchid != wechat.mchid:
        raise NotifyRejected(400, "The refund is for another merchant.")
    if order is None:
        raise NotifyRejected(404, "No such order.")
    if requested is None or requested.out_refund_no != refund.out_refund_no:
        raise NotifyRejected(404, "No such refund was requested.")
    if refund.total != order.amount or refund.refund != requested.amount:
        raise NotifyRejected(400, f"The refund's amounts ({refund.refund} of {refund.total}) are not the ones "
                                  "asked for.")
    if refund.refund_status == SUCCESS and not refund.refund_id:
        raise NotifyRejected(400, "A successful refund without a refund id.")
    return order
