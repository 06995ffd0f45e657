"""WeChat as billing sees it: mini-program login (jscode2session) and Pay v3 through ``wechatpayv3``.

Only the base URLs come from configuration, so tests talk to a local stand-in exactly as
production talks to WeChat. ``wechatpayv3`` verifies every response's signature (and raises when it
is wrong); it sets its API host only in a private attribute, which is the one place we reach in.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from types import TracebackType
from typing import Any, Self

import httpx
from wechatpayv3.async_ import AsyncWeChatPay, WeChatPayType

from .errors import BillingError, WeChatError
from .settings import WeChatSettings

log = logging.getLogger(__name__)

# httpx logs each request's URL at INFO, and jscode2session takes the app secret in its query string.
logging.getLogger("httpx").setLevel(logging.WARNING)

_OPENID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

#: jscode2session error codes (answered with HTTP 200) and what we tell the caller.
_LOGIN_ERRORS = {
    40029: (400, "The login code is not valid; call wx.login again."),
    40163: (400, "The login code was already used; call wx.login again."),
    45011: (429, "Too many sign-ins right now; try again in a minute."),
    -1: (503, "WeChat is busy; try again in a moment."),
}


class WeChat:
    """One merchant's connection to WeChat; open it with ``async with``."""

    def __init__(self, settings: WeChatSettings) -> None:
        self.settings = settings
        self.pay = AsyncWeChatPay(
            wechatpay_type=WeChatPayType.MINIPROG, mchid=settings.mchid, private_key=settings.private_key,
            cert_serial_no=settings.cert_serial_no, appid=settings.appid, apiv3_key=settings.apiv3_key,
            notify_url=settings.notify_url, cert_dir=settings.cert_dir, logger=None,
            timeout=(5.0, settings.timeout), public_key=settings.public_key, public_key_id=settings.public_key_id,
        )
        # Private in wechatpayv3 2.0.4: the only way to point it at another host (a stand-in, a proxy).
        self.pay._core._gate_way = settings.pay_api
        self.http = httpx.AsyncClient(base_url=settings.login_api, timeout=settings.timeout)

    async def __aenter__(self) -> Self:
        await self.pay.__aenter__()  # certificate mode downloads platform certificates here
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.pay.__aexit__(et, e, tb)
        await self.http.aclose()

    async def code2session(self, code: str) -> str:
        """The openid for a ``wx.login`` code. The session_key WeChat returns is dropped here."""
        params = {"appid": self.settings.appid, "secret": self.settings.app_secret, "js_code": code,
                  "grant_type": "authorization_code"}
        try:
            r = await self.http.get("/sns/jscode2session", params=params)
        except httpx.HTTPError as e:
            raise WeChatError(503, "WeChat could not be reached to sign in; try again in a moment.") from e
        try:
            data = json.loads(r.content)  # WeChat may say text/plain
        except ValueError as e:
            raise WeChatError(502, "WeChat answered the sign-in with something unreadable.") from e
        errcode = data.get("errcode") or 0
        if r.status_code != 200 or errcode:
            status, message = _LOGIN_ERRORS.get(errcode, (502, "WeChat refused the sign-in."))
            log.warning("jscode2session failed: HTTP %s errcode %s", r.status_code, errcode)
            raise WeChatError(status, message)
        openid = data.get("openid")
        if not isinstance(openid, str) or not _OPENID.match(openid):
            raise WeChatError(502, "WeChat's sign-in answer has no valid openid.")
        return openid

    async def prepay(self, *, out_trade_no: str, description: str, amount: int, openid: str) -> str:
        """Ask for a JSAPI (mini-program) prepay id."""
        status, body = await self._call("prepay", self.pay.pay(
            description=description, out_trade_no=out_trade_no, amount={"total": amount, "currency": "CNY"},
            payer={"openid": openid}, pay_type=WeChatPayType.MINIPROG))
        prepay_id = _json(body).get("prepay_id") if status == 200 else None
        if not isinstance(prepay_id, str) or not prepay_id:
            log.warning("prepay for %s failed: HTTP %s %s", out_trade_no, status, _short(body))
            raise WeChatError(502, "WeChat Pay refused to create the payment.")
        return prepay_id

    def pay_params(self, prepay_id: str) -> dict[str, str]:
        """What ``wx.requestPayment`` takes, signed with the merchant key (``signType: RSA``)."""
        timestamp, nonce, package = str(int(time.time())), secrets.token_hex(16), f"prepay_id={prepay_id}"
        sign = self.pay.sign([self.settings.appid, timestamp, nonce, package])
        return {"appId": self.settings.appid, "timeStamp": timestamp, "nonceStr": nonce, "package": package,
                "signType": "RSA", "paySign": sign}

    async def query(self, out_trade_no: str) -> dict[str, Any] | None:
        """WeChat's view of an order (a signed answer), or ``None`` when WeChat does not know it."""
        status, body = await self._call("query", self.pay.query(out_trade_no=out_trade_no))
        if status == 404:
            return None
        if status != 200:
            log.warning("query of %s failed: HTTP %s %s", out_trade_no, status, _short(body))
            raise WeChatError(502, "WeChat Pay could not tell the order's state.")
        return _json(body)

    async def close(self, out_trade_no: str) -> None:
        """Close an unpaid order at WeChat (204); 409 when WeChat says it was paid meanwhile."""
        status, body = await self._call("close", self.pay.close(out_trade_no=out_trade_no))
        if status == 204:
            return
        if status == 400 and _json(body).get("code") == "ORDERPAID":
            raise WeChatError(409, "The order was paid before it could be closed.")
        log.warning("close of %s failed: HTTP %s %s", out_trade_no, status, _short(body))
        raise WeChatError(502, "WeChat Pay refused to close the order.")

    async def refund(self, *, out_trade_no: str, out_refund_no: str, amount: int, reason: str) -> dict[str, Any]:
        """Ask for a full refund (idempotent by ``out_refund_no``); WeChat's refund record, usually
        ``PROCESSING`` until its refund notify."""
        status, body = await self._call("refund", self.pay.refund(
            out_refund_no=out_refund_no, out_trade_no=out_trade_no,
            amount={"refund": amount, "total": amount, "currency": "CNY"}, reason=reason or None,
            notify_url=self.settings.refund_notify_url))
        answer = _json(body)
        if status != 200 or not answer.get("out_refund_no"):
            log.warning("refund of %s failed: HTTP %s %s", out_trade_no, status, _short(body))
            raise WeChatError(502, f"WeChat Pay refused the refund: {str(answer.get('message') or status)[:200]}")
        return answer

    def open_notify(self, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
        """Verify the notify's signature and decrypt its resource; ``None`` when either fails."""
        try:
            return self.pay.callback(headers, body)
        except Exception as e:  # wechatpayv3 raises bare Exception for an unknown algorithm
            log.warning("notify refused by wechatpayv3: %s", e)
            return None

    async def _call(self, what: str, call: Any) -> tuple[int, Any]:
        try:
            return await call
        except httpx.HTTPError as e:
            raise WeChatError(503, "WeChat Pay could not be reached; try again in a moment.") from e
        except BillingError:
            raise
        except Exception as e:  # wechatpayv3: a response whose signature does not verify
            log.error("WeChat Pay %s: %s", what, e)
            raise WeChatError(502, "WeChat Pay's answer could not be verified.") from e


def _json(body: Any) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _short(body: Any) -> str:
    return str(body)[:200]
