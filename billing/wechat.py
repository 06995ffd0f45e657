"""WeChat as billing sees it: mini-program login (jscode2session) and Pay v3 through ``wechatpayv3``.

Only the base URLs come from configuration, so tests talk to a local stand-in exactly as
production talks to WeChat. ``wechatpayv3`` verifies every response's signature (and raises when it
is wrong); it sets its API host only in a private attribute, one of two places we reach in.

Platform-certificate rotation (certificate mode): WeChat signs with a new certificate from some day on.
``wechatpayv3`` downloads certificates when an API *response* names an unknown serial, but verifies
*notifies* synchronously against what it already holds, so after a rotation every notify would be
refused until some API call happened to refresh them. ``open_notify`` therefore refreshes them itself
on an unknown ``Wechatpay-Serial`` (at most once a minute, so forged serials cannot make us hammer
WeChat) and verifies again. The refresh checks what ``wechatpayv3``'s does not: the answer's own
signature, by the certificate it names, and it keeps the old certificates when the download fails.
The certificates list is the second private attribute we touch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import Certificate
from wechatpayv3.async_ import AsyncWeChatPay, WeChatPayType
from wechatpayv3.async_.utils import aes_decrypt, build_authorization, load_certificate, load_private_key, rsa_verify

from bus import texts

from .errors import BillingError, WeChatError
from .settings import WeChatSettings

log = logging.getLogger(__name__)

# httpx logs each request's URL at INFO, and jscode2session takes the app secret in its query string.
logging.getLogger("httpx").setLevel(logging.WARNING)

_OPENID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: WeChat's times are China time (RFC 3339 with +08:00).
CHINA = timezone(timedelta(hours=8))
CERTIFICATES_PATH = "/v3/certificates"
#: Seconds between two platform-certificate downloads triggered by unknown serials.
CERTIFICATE_REFRESH_INTERVAL = 60.0

#: jscode2session error codes (answered with HTTP 200) and what we tell the caller.
_LOGIN_ERRORS = {
    40029: (400, texts.WECHAT_LOGIN_CODE_INVALID),
    40163: (400, texts.WECHAT_LOGIN_CODE_USED),
    45011: (429, texts.WECHAT_TOO_MANY_SIGN_INS),
    -1: (503, texts.WECHAT_BUSY),
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
        self._pay_http = httpx.AsyncClient(base_url=settings.pay_api, timeout=settings.timeout)
        self._private_key = load_private_key(settings.private_key)
        self._refreshing = asyncio.Lock()
        self._refreshed_at = float("-inf")

    async def __aenter__(self) -> Self:
        await self.pay.__aenter__()  # certificate mode downloads platform certificates here
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.pay.__aexit__(et, e, tb)
        await self.http.aclose()
        await self._pay_http.aclose()

    async def code2session(self, code: str) -> str:
        """The openid for a ``wx.login`` code. The session_key WeChat returns is dropped here."""
        params = {"appid": self.settings.appid, "secret": self.settings.app_secret, "js_code": code,
                  "grant_type": "authorization_code"}
        try:
            r = await self.http.get("/sns/jscode2session", params=params)
        except httpx.HTTPError as e:
            raise WeChatError(503, texts.WECHAT_SIGN_IN_UNREACHABLE()) from e
        try:
            data = json.loads(r.content)  # WeChat may say text/plain
        except ValueError as e:
            raise WeChatError(502, texts.WECHAT_SIGN_IN_UNREADABLE()) from e
        errcode = data.get("errcode") or 0
        if r.status_code != 200 or errcode:
            status, refusal = _LOGIN_ERRORS.get(errcode, (502, texts.WECHAT_SIGN_IN_REFUSED))
            log.warning("jscode2session failed: HTTP %s errcode %s", r.status_code, errcode)
            raise WeChatError(status, refusal())
        openid = data.get("openid")
        if not isinstance(openid, str) or not _OPENID.match(openid):
            raise WeChatError(502, texts.WECHAT_NO_OPENID())
        return openid

    async def prepay(self, *, out_trade_no: str, description: str, amount: int, openid: str,
                     expires_at: float) -> str:
        """Ask for a JSAPI (mini-program) prepay id for an order WeChat takes payment for until ``expires_at``."""
        status, body = await self._call("prepay", self.pay.pay(
            description=description, out_trade_no=out_trade_no, amount={"total": amount, "currency": "CNY"},
            payer={"openid": openid}, pay_type=WeChatPayType.MINIPROG, time_expire=china_time(expires_at)))
        prepay_id = _json(body).get("prepay_id") if status == 200 else None
        if not isinstance(prepay_id, str) or not prepay_id:
            log.warning("prepay for %s failed: HTTP %s %s", out_trade_no, status, _short(body))
            raise WeChatError(502, texts.WECHAT_PREPAY_REFUSED())
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
            raise WeChatError(502, texts.WECHAT_ORDER_STATE_UNKNOWN())
        return _json(body)

    async def close(self, out_trade_no: str) -> None:
        """Close an unpaid order at WeChat (204); 409 when WeChat says it was paid meanwhile."""
        status, body = await self._call("close", self.pay.close(out_trade_no=out_trade_no))
        if status == 204:
            return
        if status == 400 and _json(body).get("code") == "ORDERPAID":
            raise WeChatError(409, texts.WECHAT_PAID_BEFORE_CLOSE())
        log.warning("close of %s failed: HTTP %s %s", out_trade_no, status, _short(body))
        raise WeChatError(502, texts.WECHAT_CLOSE_REFUSED())

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
            raise WeChatError(502, texts.WECHAT_REFUND_REFUSED(detail=str(answer.get("message") or status)[:200]))
        return answer

    async def query_refund(self, out_refund_no: str) -> dict[str, Any] | None:
        """WeChat's record of a refund (a signed answer), or ``None`` when WeChat never received it."""
        status, body = await self._call("refund query", self.pay.query_refund(out_refund_no=out_refund_no))
        if status == 404:
            return None
        if status != 200:
            log.warning("query of refund %s failed: HTTP %s %s", out_refund_no, status, _short(body))
            raise WeChatError(502, texts.WECHAT_REFUND_STATE_UNKNOWN())
        return _json(body)

    async def open_notify(self, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
        """Verify the notify's signature and decrypt its resource; ``None`` when either fails. A notify signed
        with a platform certificate we do not hold yet (a rotation) is verified again after a refresh."""
        opened = self._open(headers, body)
        if opened is None and self._unknown_serial(headers):
            await self.refresh_certificates()
            opened = self._open(headers, body)
        return opened

    def _open(self, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
        try:
            return self.pay.callback(headers, body)
        except Exception as e:  # wechatpayv3 raises bare Exception for an unknown algorithm
            log.warning("notify refused by wechatpayv3: %s", e)
            return None

    @property
    def _certificates(self) -> list[Certificate]:
        """The platform certificates ``wechatpayv3`` verifies with (private in 2.0.4)."""
        certificates: list[Certificate] = self.pay._core._certificates
        return certificates

    def _unknown_serial(self, headers: dict[str, str]) -> bool:
        """Certificate mode, and the notify names a serial none of our platform certificates has."""
        if self.settings.public_key is not None:
            return False
        serial = {k.lower(): v for k, v in headers.items()}.get("wechatpay-serial", "")
        try:
            number = int(serial, 16)
        except ValueError:
            return False
        return all(cert.serial_number != number for cert in self._certificates)

    async def refresh_certificates(self) -> bool:
        """Download the platform certificates and use them; False when skipped (one refresh a minute) or refused
        (unreachable, unsigned, undecryptable): the certificates held so far stay in use then."""
        async with self._refreshing:
            if time.monotonic() - self._refreshed_at < CERTIFICATE_REFRESH_INTERVAL:
                return False
            self._refreshed_at = time.monotonic()
            certificates = await self._download_certificates()
            if not certificates:
                return False
            self._certificates[:] = certificates
            self._save_certificates(certificates)
            log.info("platform certificates refreshed: serials %s",
                     ", ".join(format(c.serial_number, "X") for c in certificates))
            return True

    async def _download_certificates(self) -> list[Certificate]:
        """``GET /v3/certificates``: each certificate decrypted with the APIv3 key and in its validity period,
        and the answer signed by one of them (the serial it names)."""
        auth = build_authorization(CERTIFICATES_PATH, "GET", self.settings.mchid, self.settings.cert_serial_no,
                                   self._private_key)
        try:
            r = await self._pay_http.get(CERTIFICATES_PATH, headers={"Authorization": auth,
                                                                      "Accept": "application/json"})
        except httpx.HTTPError as e:
            log.warning("platform certificates could not be downloaded: %s", e)
            return []
        entries = _json(r.content).get("data") if r.status_code == 200 else None
        if not isinstance(entries, list):
            log.warning("platform certificates download failed: HTTP %s %s", r.status_code, _short(r.text))
            return []
        now = datetime.now(UTC)
        certificates: dict[int, Certificate] = {}
        for entry in entries:
            sealed = entry.get("encrypt_certificate") if isinstance(entry, dict) else None
            if not isinstance(sealed, dict) or sealed.get("algorithm") != "AEAD_AES_256_GCM":
                continue
            try:
                pem = aes_decrypt(nonce=str(sealed.get("nonce", "")), ciphertext=str(sealed.get("ciphertext", "")),
                                  associated_data=str(sealed.get("associated_data", "")),
                                  apiv3_key=self.settings.apiv3_key)
            except ValueError:
                pem = None
            cert = load_certificate(pem) if pem else None
            if cert is not None and cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                certificates[cert.serial_number] = cert
        try:
            signer = certificates.get(int(r.headers.get("wechatpay-serial", ""), 16))
        except ValueError:
            signer = None
        if signer is None or not rsa_verify(r.headers.get("wechatpay-timestamp", ""),
                                            r.headers.get("wechatpay-nonce", ""), r.text,
                                            r.headers.get("wechatpay-signature", ""), signer.public_key()):
            log.error("the platform certificates' answer is not signed by one of them; keeping the old ones")
            return []
        return list(certificates.values())

    def _save_certificates(self, certificates: list[Certificate]) -> None:
        """Kept in ``WECHAT_CERT_DIR`` (where ``wechatpayv3`` loads them at start-up), so a restart has them."""
        if not self.settings.cert_dir:
            return
        folder = Path(self.settings.cert_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for cert in certificates:
            path = folder / f"{format(cert.serial_number, 'X')}.pem"
            if not path.exists():
                path.write_bytes(cert.public_bytes(Encoding.PEM))

    async def _call(self, what: str, call: Any) -> tuple[int, Any]:
        try:
            return await call
        except httpx.HTTPError as e:
            raise WeChatError(503, texts.WECHAT_PAY_UNREACHABLE()) from e
        except BillingError:
            raise
        except Exception as e:  # wechatpayv3: a response whose signature does not verify
            log.error("WeChat Pay %s: %s", what, e)
            raise WeChatError(502, texts.WECHAT_PAY_UNVERIFIED()) from e


def china_time(at: float) -> str:
    """WeChat's time format, e.g. ``2026-11-28T11:30:00+08:00``."""
    return datetime.fromtimestamp(int(at), CHINA).isoformat()


def _json(body: Any) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _short(body: Any) -> str:
    return str(body)[:200]
