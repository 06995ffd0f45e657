"""``/api/wechat/*``: the mini-program's sign-in and WeChat Pay, bridged to the billing service.

The edge holds no billing state or secret: each route is one request/reply to billing, which
answers refusals as ``nats.micro`` service errors whose code is the HTTP status. A notify's headers
and raw body travel intact, so billing verifies WeChat's signature itself. With no billing on the
bus, NATS says so in about a millisecond and the edge answers 503 at once.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bus import subjects
from bus.billing import (
    AccountView,
    NotifyReply,
    NotifyRequest,
    OpenidRequest,
    OrderCloseRequest,
    OrderQueryRequest,
    OrdersReply,
    OrderView,
    PayCreateReply,
    PayCreateRequest,
    RefundReply,
    RefundRequest,
    SessionReply,
    SessionRequest,
    StatsReply,
    StatsRequest,
)
from bus.schemas import Message

from .. import contract, texts
from ..auth import AdminDep
from ..billing_client import ask
from ..contract import WeChatOk
from ..deps import ResourcesDep
from ..errors import ApiError
from ..resources import Resources

router = APIRouter(prefix="/api/wechat", tags=["wechat"])

#: What a JSON route may answer instead: billing's refusal (``{"success": false, "error": ...}``) with its status.
REFUSALS = contract.errors(400, 401, 402, 403, 404, 409, 502, 503, 504)
#: What a notify route answers when billing did not accept it (WeChat then retries).
NOTIFY_REFUSALS: dict[int | str, dict[str, Any]] = {code: {"model": contract.NotifyRefusal}
                                                    for code in (400, 401, 404, 409, 502, 503, 504)}

_TRADE_NO = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

AuthHeader = Annotated[str, Header(alias="Authorization", description="Bearer <token from /auth/openid>")]


class SignIn(BaseModel):
    code: str = Field(min_length=1, max_length=128, description="The code from wx.login()")


class Refund(BaseModel):
    reason: str = Field(default="", max_length=80, description="Shown to the payer by WeChat")


class PayCreate(BaseModel):
    """A product (with the session in ``Authorization``), or the original mini-program's body: the payee's
    ``openid`` and ``total_fee`` in fen, which must be exactly a product's price (``body``/``attach`` are
    accepted and ignored: the product names the order)."""

    product: str | None = Field(default=None, min_length=1, max_length=32,
                                description="A product id, e.g. basic, premium, unlimited")
    openid: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{6,64}$",
                               description="The original mini-program's payee (with total_fee)")
    total_fee: float | None = Field(default=None, gt=0, le=1_000_000,
                                    description="The original mini-program's amount in fen (truncated, as it was)")
    body: str | None = Field(default=None, max_length=128)
    attach: str | None = Field(default=None, max_length=128)

    def request(self, token: str) -> PayCreateRequest:
        if self.product:
            return PayCreateRequest(token=token, product=self.product)
        if self.openid and self.total_fee is not None and not token:
            return PayCreateRequest(token="", product="", openid=self.openid, amount=int(self.total_fee))
        raise ApiError(400, texts.WECHAT_MISSING_PRODUCT() if token else texts.WECHAT_MISSING_PRODUCT_OR_FEE(),
                       success=False)


def ok(data_type: type[contract.Data], reply: Message) -> WeChatOk[contract.Data]:
    """The original gateway's success shape, which the mini-program reads, around billing's reply."""
    return WeChatOk[data_type](success=True, data=data_type.model_validate(_public(reply)))


def _public(reply: Message) -> dict[str, Any]:
    data = reply.to_dict()
    data.pop("type")
    return data


@router.post("/auth/openid", summary="Sign in with a wx.login code: openid and a session token (never session_key)",
             responses=REFUSALS)
async def sign_in(res: ResourcesDep, body: SignIn) -> WeChatOk[contract.Session]:
    reply = await ask(res, subjects.BILLING_AUTH_OPENID, OpenidRequest(code=body.code), SessionReply)
    return ok(contract.Session, reply)


@router.post("/pay/create", summary="Create an order for a product; returns wx.requestPayment parameters",
             responses=REFUSALS)
async def pay_create(res: ResourcesDep, body: PayCreate, authorization: AuthHeader = ""
                     ) -> WeChatOk[contract.PayCreated]:
    reply = await ask(res, subjects.BILLING_PAY_CREATE, body.request(authorization), PayCreateReply)
    return ok(contract.PayCreated, reply)


@router.get("/pay/query/{out_trade_no}", summary="An order of the caller's (asks WeChat while it is pending)",
            responses=REFUSALS)
async def pay_query(res: ResourcesDep, out_trade_no: str, authorization: AuthHeader = "") -> WeChatOk[contract.Order]:
    reply = await ask(res, subjects.BILLING_PAY_QUERY,
                      OrderQueryRequest(token=authorization, out_trade_no=_trade_no(out_trade_no)), OrderView)
    return ok(contract.Order, reply)


def _trade_no(out_trade_no: str) -> str:
    if not _TRADE_NO.match(out_trade_no):
        raise ApiError(400, texts.WECHAT_NOT_AN_ORDER_NUMBER(), success=False)
    return out_trade_no


@router.post("/pay/close/{out_trade_no}", summary="Close a pending order of the caller's (it can no longer be paid)",
             responses=REFUSALS)
async def pay_close(res: ResourcesDep, out_trade_no: str, authorization: AuthHeader = "") -> WeChatOk[contract.Order]:
    reply = await ask(res, subjects.BILLING_PAY_CLOSE,
                      OrderCloseRequest(token=authorization, out_trade_no=_trade_no(out_trade_no)), OrderView)
    return ok(contract.Order, reply)


@router.post("/pay/refund/{out_trade_no}", summary="Refund a paid order in full (admin token)",
             responses=REFUSALS)
async def pay_refund(res: ResourcesDep, _: AdminDep, out_trade_no: str, body: Refund | None = None
                     ) -> WeChatOk[contract.RefundStarted]:
    reply = await ask(res, subjects.BILLING_PAY_REFUND,
                      RefundRequest(out_trade_no=_trade_no(out_trade_no), reason=body.reason if body else ""),
                      RefundReply)
    return ok(contract.RefundStarted, reply)


async def _notify(res: Resources, subject: str, request: Request) -> Response:
    """204 when billing accepted it; otherwise 4xx/5xx with ``{"code": "FAIL", "message": ...}``, and WeChat
    retries."""
    message = NotifyRequest(headers=dict(request.headers), body=await request.body())
    try:
        await ask(res, subject, message, NotifyReply)
    except ApiError as e:
        return JSONResponse({"code": "FAIL", "message": e.message}, status_code=e.status, headers=e.headers)
    return Response(status_code=204)


@router.post("/pay/notify", summary="WeChat Pay's payment notify (v3); answered as WeChat expects",
             status_code=204, response_class=Response, responses=NOTIFY_REFUSALS)
@router.post("/pay/notify/", include_in_schema=False, status_code=204, response_class=Response)
async def pay_notify(res: ResourcesDep, request: Request) -> Response:
    return await _notify(res, subjects.BILLING_PAY_NOTIFY, request)


@router.post("/pay/refund-notify", summary="WeChat Pay's refund notify (v3); answered as WeChat expects",
             status_code=204, response_class=Response, responses=NOTIFY_REFUSALS)
@router.post("/pay/refund-notify/", include_in_schema=False, status_code=204, response_class=Response)
async def refund_notify(res: ResourcesDep, request: Request) -> Response:
    return await _notify(res, subjects.BILLING_PAY_REFUND_NOTIFY, request)


@router.get("/account", summary="The caller's remaining uses, free uses left today, and history",
            responses=REFUSALS)
async def account(res: ResourcesDep, authorization: AuthHeader = "") -> WeChatOk[contract.Account]:
    reply = await ask(res, subjects.BILLING_ACCOUNT, SessionRequest(token=authorization), AccountView)
    return ok(contract.Account, reply)


@router.get("/pay/orders", summary="The caller's orders, newest first",
            responses=REFUSALS)
async def pay_orders(res: ResourcesDep, authorization: AuthHeader = "") -> WeChatOk[contract.Orders]:
    reply = await ask(res, subjects.BILLING_PAY_ORDERS, SessionRequest(token=authorization), OrdersReply)
    return ok(contract.Orders, reply)


@router.get("/pay/stats", summary="Orders by status and paid amounts by day (admin token)",
            responses=REFUSALS)
async def pay_stats(res: ResourcesDep, _: AdminDep,
                    days: Annotated[int, Query(ge=1, le=366, description="Days of payments to sum")] = 30
                    ) -> WeChatOk[contract.Stats]:
    reply = await ask(res, subjects.BILLING_PAY_STATS, StatsRequest(days=days), StatsReply)
    return ok(contract.Stats, reply)
