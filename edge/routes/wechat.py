"""``/api/wechat/*``: the mini-program's sign-in and WeChat Pay, bridged to the billing service.

The edge holds no billing state or secret: each route is one request/reply to billing, which
answers refusals as ``nats.micro`` service errors whose code is the HTTP status. A notify's headers
and raw body travel intact, so billing verifies WeChat's signature itself. With no billing on the
bus, NATS says so in about a millisecond and the edge answers 503 at once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Annotated, Any, TypeVar

import nats.errors
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER
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
    UseReleaseRequest,
    UseReply,
    UseRequest,
)
from bus.codec import SchemaError
from bus.schemas import Message

from ..auth import AdminDep
from ..deps import ResourcesDep
from ..errors import ApiError
from ..resources import Resources

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/wechat", tags=["wechat"])

#: Seconds the edge waits for billing, which may itself wait on WeChat (10 s per call).
BILLING_TIMEOUT = 25.0
_TRADE_NO = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

Reply = TypeVar("Reply", bound=Message)
AuthHeader = Annotated[str, Header(alias="Authorization", description="Bearer <token from /auth/openid>")]


class SignIn(BaseModel):
    code: str = Field(min_length=1, max_length=128, description="The code from wx.login()")


class Refund(BaseModel):
    reason: str = Field(default="", max_length=80, description="Shown to the payer by WeChat")


class PayCreate(BaseModel):
    product: str = Field(min_length=1, max_length=32, description="A product id, e.g. basic, premium, unlimited")


async def ask(res: Resources, subject: str, message: Message, reply_type: type[Reply]) -> Reply:
    """One request to billing; its refusals become ``ApiError`` with billing's status and sentence."""
    try:
        msg = await res.nc.request(subject, message.encode(), timeout=BILLING_TIMEOUT,
                                   headers={subjects.TYPE_HEADER: message.TYPE})
    except nats.errors.NoRespondersError as e:
        raise ApiError(503, "Payments are not available right now; please try again in a moment.",
                       headers={"Retry-After": "10"}, success=False) from e
    except nats.errors.TimeoutError as e:
        raise ApiError(504, "Billing did not answer in time; please try again.", success=False) from e
    headers = msg.headers or {}
    if ERROR_CODE_HEADER in headers:
        code = headers[ERROR_CODE_HEADER]
        status = int(code) if code.isdigit() and 400 <= int(code) < 600 else 502
        retry = {"Retry-After": "10"} if status == 503 else None  # billing is restarting: come back soon
        raise ApiError(status, headers.get(ERROR_HEADER) or "Billing refused the request.", headers=retry,
                       success=False)
    try:
        return reply_type.decode(msg.data, subject=subject)
    except SchemaError as e:
        raise ApiError(502, "Billing answered with something unreadable.", success=False) from e


def ok(data: dict[str, Any]) -> dict[str, Any]:
    """The original gateway's success shape, which the mini-program reads."""
    return {"success": True, "data": data}


def _public(reply: Message) -> dict[str, Any]:
    data = reply.to_dict()
    data.pop("type")
    return data


@router.post("/auth/openid", summary="Sign in with a wx.login code: openid and a session token (never session_key)")
async def sign_in(res: ResourcesDep, body: SignIn) -> dict[str, Any]:
    reply = await ask(res, subjects.BILLING_AUTH_OPENID, OpenidRequest(code=body.code), SessionReply)
    return ok(_public(reply))


@router.post("/pay/create", summary="Create an order for a product; returns wx.requestPayment parameters")
async def pay_create(res: ResourcesDep, body: PayCreate, authorization: AuthHeader = "") -> dict[str, Any]:
    reply = await ask(res, subjects.BILLING_PAY_CREATE, PayCreateRequest(token=authorization, product=body.product),
                      PayCreateReply)
    return ok(_public(reply))


@router.get("/pay/query/{out_trade_no}", summary="An order of the caller's (asks WeChat while it is pending)")
async def pay_query(res: ResourcesDep, out_trade_no: str, authorization: AuthHeader = "") -> dict[str, Any]:
    reply = await ask(res, subjects.BILLING_PAY_QUERY,
                      OrderQueryRequest(token=authorization, out_trade_no=_trade_no(out_trade_no)), OrderView)
    return ok(_public(reply))


def _trade_no(out_trade_no: str) -> str:
    if not _TRADE_NO.match(out_trade_no):
        raise ApiError(400, "That is not an order number.", success=False)
    return out_trade_no


@router.post("/pay/close/{out_trade_no}", summary="Close a pending order of the caller's (it can no longer be paid)")
async def pay_close(res: ResourcesDep, out_trade_no: str, authorization: AuthHeader = "") -> dict[str, Any]:
    reply = await ask(res, subjects.BILLING_PAY_CLOSE,
                      OrderCloseRequest(token=authorization, out_trade_no=_trade_no(out_trade_no)), OrderView)
    return ok(_public(reply))


@router.post("/pay/refund/{out_trade_no}", summary="Refund a paid order in full (admin token)")
async def pay_refund(res: ResourcesDep, _: AdminDep, out_trade_no: str, body: Refund | None = None
                     ) -> dict[str, Any]:
    reply = await ask(res, subjects.BILLING_PAY_REFUND,
                      RefundRequest(out_trade_no=_trade_no(out_trade_no), reason=body.reason if body else ""),
                      RefundReply)
    return ok(_public(reply))


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
             status_code=204, response_class=Response)
@router.post("/pay/notify/", include_in_schema=False, status_code=204, response_class=Response)
async def pay_notify(res: ResourcesDep, request: Request) -> Response:
    return await _notify(res, subjects.BILLING_PAY_NOTIFY, request)


@router.post("/pay/refund-notify", summary="WeChat Pay's refund notify (v3); answered as WeChat expects",
             status_code=204, response_class=Response)
@router.post("/pay/refund-notify/", include_in_schema=False, status_code=204, response_class=Response)
async def refund_notify(res: ResourcesDep, request: Request) -> Response:
    return await _notify(res, subjects.BILLING_PAY_REFUND_NOTIFY, request)


@router.get("/account", summary="The caller's remaining uses, free uses left today, and history")
async def account(res: ResourcesDep, authorization: AuthHeader = "") -> dict[str, Any]:
    reply = await ask(res, subjects.BILLING_ACCOUNT, SessionRequest(token=authorization), AccountView)
    return ok(_public(reply))


@router.get("/pay/orders", summary="The caller's orders, newest first")
async def pay_orders(res: ResourcesDep, authorization: AuthHeader = "") -> dict[str, Any]:
    reply = await ask(res, subjects.BILLING_PAY_ORDERS, SessionRequest(token=authorization), OrdersReply)
    return ok(_public(reply))


@router.get("/pay/stats", summary="Orders by status and paid amounts by day (admin token)")
async def pay_stats(res: ResourcesDep, _: AdminDep,
                    days: Annotated[int, Query(ge=1, le=366, description="Days of payments to sum")] = 30
                    ) -> dict[str, Any]:
    reply = await ask(res, subjects.BILLING_PAY_STATS, StatsRequest(days=days), StatsReply)
    return ok(_public(reply))


# --- credits, used by the enhance routes ----------------------------------------------------------
def visitor_id(client: str) -> str:
    """An anonymous visitor's key in billing: a hash of the address, never the address itself."""
    return hashlib.sha256(f"visitor:{client}".encode()).hexdigest()[:32]


async def reserve_use(res: Resources, authorization: str | None, task_id: str, client: str = "") -> str | None:
    """Hold one use for ``task_id`` and return who pays for it (the user's openid, or ``anon:<hash>``).

    With a mini-program session, billing decides (401 bad session, 402 nothing left). Without one the
    request is anonymous web use, metered by a daily quota per address; if billing is not on the bus,
    anonymous use goes on unmetered (``None``) rather than stopping the web page."""
    if not authorization:
        try:
            reply = await ask(res, subjects.BILLING_USE_RESERVE,
                              UseRequest(token="", task_id=task_id, client=visitor_id(client)), UseReply)
        except ApiError as e:
            if e.status in (503, 504):
                log.warning("task %s: billing away; anonymous use not metered", task_id)
                return None
            raise
        return reply.openid
    try:
        reply = await ask(res, subjects.BILLING_USE_RESERVE, UseRequest(token=authorization, task_id=task_id),
                          UseReply)
    except ApiError as e:
        if e.status in (503, 504):  # billing away: say what cannot be done, not "payments"
            raise ApiError(503, "Your remaining uses cannot be checked right now; please try again in a moment.",
                           headers={"Retry-After": "10"}, success=False) from e
        raise
    return reply.openid


async def release_use(res: Resources, openid: str | None, task_id: str, reason: str) -> None:
    """Give back a use whose task was never queued; on failure the use stays held until its hold expires."""
    if openid is None:
        return
    try:
        await ask(res, subjects.BILLING_USE_RELEASE, UseReleaseRequest(openid=openid, task_id=task_id, reason=reason),
                  UseReply)
    except ApiError as e:
        log.warning("task %s: could not release its reserved use: %s", task_id, e.message)
