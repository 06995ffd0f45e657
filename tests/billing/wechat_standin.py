"""A local stand-in for WeChat, speaking the real protocol, for tests that must not reach WeChat.

It serves, on a free port of 127.0.0.1, what billing calls:

- ``GET /sns/jscode2session`` (mini-program login; errors as HTTP 200 with ``errcode``, ``text/plain``);
- ``POST /v3/pay/transactions/jsapi``, ``GET /v3/pay/transactions/out-trade-no/{no}?mchid=``,
  ``POST /v3/pay/transactions/out-trade-no/{no}/close``, ``POST /v3/refund/domestic/refunds``,
  ``GET /v3/refund/domestic/refunds/{out_refund_no}``, ``GET /v3/certificates`` (Pay v3): every request's
  ``Authorization: WECHATPAY2-SHA256-RSA2048 ...`` is verified with the merchant's public key (method,
  path with query, timestamp within 5 minutes, nonce, body), and every 2xx answer is signed with the
  platform key and names the WeChat Pay public key id (public-key mode), as WeChat does.

It also plays WeChat's side of a payment: ``pay()`` marks an order paid (the user paid in the
mini-program; refused for a closed order) and ``notify()`` builds a notify: the transaction encrypted
with AES-256-GCM under the APIv3 key, headers signed RSA-SHA256 over ``timestamp\\nnonce\\nbody\\n``.
``refund_succeeded()`` completes a refund and ``refund_notify()`` builds its ``REFUND.SUCCESS`` notify
the same way. Keys are generated per test run.

Two ways WeChat lets a merchant verify it, as in production: public-key mode (the default: responses and
notifies name the WeChat Pay public key id) or certificate mode (``certificate_mode=True``: they name the
serial of the newest platform certificate, which ``GET /v3/certificates`` hands out encrypted under the
APIv3 key); ``rotate_platform_certificate()`` starts signing with a new one, as WeChat does every few years.
An order's ``time_expire`` is honoured: ``pay()`` refuses an expired order. ``unavailable`` names routes
that answer 500 (``SYSTEM_ERROR``), for a WeChat that fails at the worst moment.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509 import Certificate, CertificateBuilder, Name, NameAttribute, random_serial_number
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
CHINA = timezone(timedelta(hours=8))
_AUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def rsa_sign(key: rsa.RSAPrivateKey, message: str) -> str:
    return base64.b64encode(key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def new_certificate(key: rsa.RSAPrivateKey) -> Certificate:
    """A platform certificate for ``key``, valid from a minute ago for five years (self-signed, as the test
    needs no CA: billing trusts what the APIv3 key decrypts)."""
    name = Name([NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA stand-in")])
    now = datetime.now(UTC)
    return (CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=5 * 365)).sign(key, hashes.SHA256()))


def china_time(at: float) -> str:
    """WeChat's time format, e.g. ``2026-11-28T11:30:00+08:00``."""
    return datetime.fromtimestamp(int(at), CHINA).isoformat()


class WeChatStandIn:
    """WeChat's login and Pay v3 APIs for one merchant and one mini-program."""

    def __init__(self, *, appid: str = "wx1234567890abcdef", mchid: str = "1900000109",
                 certificate_mode: bool = False) -> None:
        self.appid = appid
        self.mchid = mchid
        self.app_secret = secrets.token_hex(16)
        self.apiv3_key = secrets.token_hex(16)  # 32 bytes
        self.merchant_key = new_key()
        self.merchant_serial = secrets.token_hex(20).upper()
        self.platform_key = new_key()
        self.public_key_id = f"PUB_KEY_ID_{secrets.randbelow(10**20):020d}"
        self.certificate_mode = certificate_mode
        #: Platform certificates handed out by ``GET /v3/certificates``, newest last: it signs.
        self.certificates: list[Certificate] = [new_certificate(self.platform_key)]
        #: Route names (``refund``, ``query``, ...) that answer 500 SYSTEM_ERROR until removed.
        self.unavailable: set[str] = set()
        self.codes: dict[str, str] = {}
        self.used_codes: set[str] = set()
        self.orders: dict[str, dict[str, Any]] = {}
        #: Refunds by out_refund_no: the request's fields and WeChat's state.
        self.refunds: dict[str, dict[str, Any]] = {}
        #: Requests refused for a bad ``Authorization`` (a test can assert none happened).
        self.auth_failures: list[str] = []
        #: Every Pay v3 request that passed the signature check: (method, path).
        self.calls: list[tuple[str, str]] = []
        #: Seconds a prepay (``jsapi``) takes to answer: a slow WeChat, so billing holds requests in flight.
        self.prepay_delay = 0.0
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WeChatStandIn:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="wechat-standin")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the WeChat stand-in did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)

    def billing_env(self, secrets_dir: Path, notify_url: str) -> dict[str, str]:
        """What billing needs to talk to this stand-in exactly as to WeChat (keys as files, like production)."""
        secrets_dir.mkdir(parents=True, exist_ok=True)
        key_file = secrets_dir / "apiclient_key.pem"
        key_file.write_text(private_pem(self.merchant_key))
        pub_file = secrets_dir / "pub_key.pem"
        pub_file.write_text(public_pem(self.platform_key))
        env = {"WECHAT_APPID": self.appid, "WECHAT_MCHID": self.mchid, "WECHAT_APP_SECRET": self.app_secret,
               "WECHAT_APIV3_KEY": self.apiv3_key, "WECHAT_PRIVATE_KEY_FILE": str(key_file),
               "WECHAT_CERT_SERIAL_NO": self.merchant_serial, "WECHAT_NOTIFY_URL": notify_url,
               "WECHAT_PAY_API": self.url, "WECHAT_LOGIN_API": self.url}
        if self.certificate_mode:  # billing downloads the platform certificates into this folder
            return env | {"WECHAT_CERT_DIR": str(secrets_dir / "platform-certificates")}
        return env | {"WECHAT_PAY_PUBLIC_KEY_FILE": str(pub_file), "WECHAT_PAY_PUBLIC_KEY_ID": self.public_key_id}

    @property
    def serial(self) -> str:
        """What ``Wechatpay-Serial`` names: the public key id, or the signing certificate's serial (hex)."""
        return format(self.certificates[-1].serial_number, "X") if self.certificate_mode else self.public_key_id

    def rotate_platform_certificate(self) -> str:
        """WeChat starts signing with a new platform key and certificate (the old one is still listed, as during
        a real rotation). Returns the new serial."""
        with self._lock:
            self.platform_key = new_key()
            self.certificates.append(new_certificate(self.platform_key))
        return self.serial

    # --- WeChat's side of the story -------------------------------------------------------------
    def login_code(self, openid: str) -> str:
        """What ``wx.login()`` gives the mini-program of user ``openid``: a one-time code."""
        code = secrets.token_hex(16)
        with self._lock:
            self.codes[code] = openid
        return code

    def pay(self, out_trade_no: str) -> dict[str, Any]:
        """The user paid in the mini-program: the order becomes SUCCESS. Returns the transaction."""
        now = time.time()
        with self._lock:
            order = self.orders[out_trade_no]
            if order["trade_state"] == "CLOSED":
                raise ValueError(f"order {out_trade_no} is closed: WeChat does not take a payment for it")
            expires = order.get("time_expire")
            if order["trade_state"] != "SUCCESS" and expires and datetime.fromisoformat(expires).timestamp() < now:
                raise ValueError(f"order {out_trade_no} expired at {expires}: WeChat does not take a payment for it")
            if order["trade_state"] != "SUCCESS":
                order.update(trade_state="SUCCESS", trade_state_desc="支付成功", success_at=int(time.time()),
                             transaction_id=f"4200{secrets.randbelow(10**24):024d}")
        return self.transaction(out_trade_no)

    def transaction(self, out_trade_no: str) -> dict[str, Any]:
        """The order as WeChat reports it (query answer, notify resource)."""
        with self._lock:
            o = dict(self.orders[out_trade_no])
        tx: dict[str, Any] = {
            "appid": o["appid"], "mchid": o["mchid"], "out_trade_no": out_trade_no, "trade_type": "JSAPI",
            "trade_state": o["trade_state"], "trade_state_desc": o["trade_state_desc"], "attach": "",
            "payer": {"openid": o["openid"]},
            "amount": {"total": o["total"], "currency": "CNY", "payer_currency": "CNY"},
        }
        if o["trade_state"] == "SUCCESS":
            tx |= {"transaction_id": o["transaction_id"], "bank_type": "OTHERS",
                   "success_time": china_time(o["success_at"])}
            tx["amount"]["payer_total"] = o["total"]
        return tx

    def refund_succeeded(self, out_refund_no: str) -> dict[str, Any]:
        """WeChat returned the money: the refund becomes SUCCESS. Returns the refund notify's resource."""
        with self._lock:
            refund = self.refunds[out_refund_no]
            if refund["status"] != "SUCCESS":
                refund.update(status="SUCCESS", success_at=int(time.time()))
                self.orders[refund["out_trade_no"]].update(trade_state="REFUND", trade_state_desc="转入退款")
            r = dict(refund)
        return {"mchid": self.mchid, "out_trade_no": r["out_trade_no"], "transaction_id": r["transaction_id"],
                "out_refund_no": out_refund_no, "refund_id": r["refund_id"], "refund_status": "SUCCESS",
                "success_time": china_time(r["success_at"]), "user_received_account": "支付用户零钱",
                "amount": {"total": r["total"], "refund": r["refund"], "payer_total": r["total"],
                           "payer_refund": r["refund"]}}

    def refund_notify(self, resource: dict[str, Any], **kwargs: Any) -> tuple[dict[str, str], bytes]:
        """A refund notify as WeChat sends it (``REFUND.SUCCESS``, resource ``refund``): (headers, body)."""
        return self.notify(resource, **{"event_type": "REFUND.SUCCESS", "original_type": "refund",
                                        "summary": "退款成功", **kwargs})

    def notify(self, transaction: dict[str, Any], *, timestamp: int | None = None,
               signing_key: rsa.RSAPrivateKey | None = None, apiv3_key: str | None = None,
               event_type: str = "TRANSACTION.SUCCESS", original_type: str = "transaction",
               summary: str = "支付成功") -> tuple[dict[str, str], bytes]:
        """A payment notify as WeChat sends it: (headers, body). The overrides forge or age it."""
        nonce, aad = secrets.token_hex(6), original_type
        ciphertext = AESGCM((apiv3_key or self.apiv3_key).encode()).encrypt(
            nonce.encode(), json.dumps(transaction, ensure_ascii=False).encode(), aad.encode())
        body = json.dumps({
            "id": str(uuid.uuid4()), "create_time": china_time(time.time()), "resource_type": "encrypt-resource",
            "event_type": event_type, "summary": summary,
            "resource": {"original_type": original_type, "algorithm": "AEAD_AES_256_GCM",
                         "ciphertext": base64.b64encode(ciphertext).decode(), "associated_data": aad,
                         "nonce": nonce},
        }, ensure_ascii=False)
        return self._signed_headers(body, timestamp=timestamp, key=signing_key), body.encode()

    def post_notify(self, url: str, transaction: dict[str, Any], **kwargs: Any) -> httpx.Response:
        """Send a notify to the service, as WeChat's servers would."""
        headers, body = self.notify(transaction, **kwargs)
        return httpx.post(url, content=body, headers={**headers, "Content-Type": "application/json"}, timeout=30)

    # --- protocol -------------------------------------------------------------------------------
    def _signed_headers(self, body: str, *, timestamp: int | None = None,
                        key: rsa.RSAPrivateKey | None = None) -> dict[str, str]:
        ts, nonce = str(timestamp if timestamp is not None else int(time.time())), secrets.token_hex(16)
        return {"Wechatpay-Timestamp": ts, "Wechatpay-Nonce": nonce,
                "Wechatpay-Signature": rsa_sign(key or self.platform_key, f"{ts}\n{nonce}\n{body}\n"),
                "Wechatpay-Serial": self.serial, "Wechatpay-Signature-Type": SIGNATURE_TYPE}

    def _signed(self, payload: dict[str, Any], status: int = 200) -> Response:
        body = json.dumps(payload, ensure_ascii=False)
        return Response(body, status_code=status, media_type="application/json",
                        headers=self._signed_headers(body))

    @staticmethod
    def _error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"code": code, "message": message}, status_code=status)

    def _check_authorization(self, request: Request, body: bytes) -> str | None:
        """Why the merchant's signature is not acceptable, or None when it is."""
        scheme, _, params = request.headers.get("authorization", "").partition(" ")
        if scheme != SIGNATURE_TYPE:
            return "unknown authorization scheme"
        p = dict(_AUTH_PARAM.findall(params))
        if p.get("mchid") != self.mchid or p.get("serial_no") != self.merchant_serial:
            return "wrong mchid or certificate serial"
        if not p.get("timestamp", "").isdigit() or abs(time.time() - int(p["timestamp"])) > 300:
            return "timestamp out of range"
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        message = f"{request.method}\n{path}\n{p['timestamp']}\n{p.get('nonce_str', '')}\n{body.decode()}\n"
        try:
            self.merchant_key.public_key().verify(base64.b64decode(p.get("signature", "")), message.encode(),
                                                  padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return "signature does not verify"
        return None

    async def _authorized(self, request: Request) -> tuple[bytes, Response | None]:
        body = await request.body()
        name = getattr(request.scope.get("endpoint"), "__name__", "")
        if name in self.unavailable:
            return body, self._error(500, "SYSTEM_ERROR", "系统错误")
        why = self._check_authorization(request, body)
        if why is not None:
            self.auth_failures.append(f"{request.method} {request.url.path}: {why}")
            return body, self._error(401, "SIGN_ERROR", f"签名错误 ({why})")
        self.calls.append((request.method, request.url.path))
        return body, None

    def app(self) -> Starlette:
        async def jscode2session(request: Request) -> Response:
            q = request.query_params
            if q.get("appid") != self.appid or q.get("secret") != self.app_secret:
                result: dict[str, Any] = {"errcode": 40125, "errmsg": "invalid appsecret"}
            else:
                code = q.get("js_code", "")
                with self._lock:
                    openid = self.codes.get(code)
                    reused = code in self.used_codes
                    self.used_codes.add(code)
                if reused:
                    result = {"errcode": 40163, "errmsg": "code been used"}
                elif openid is None:
                    result = {"errcode": 40029, "errmsg": "invalid code"}
                else:
                    result = {"openid": openid, "session_key": base64.b64encode(secrets.token_bytes(16)).decode()}
            return PlainTextResponse(json.dumps(result))  # WeChat really says text/plain

        async def jsapi(request: Request) -> Response:
            body, refused = await self._authorized(request)
            if refused:
                return refused
            if self.prepay_delay:
                await asyncio.sleep(self.prepay_delay)
            data = json.loads(body)
            if data.get("appid") != self.appid or data.get("mchid") != self.mchid:
                return self._error(400, "PARAM_ERROR", "appid和mch_id不匹配")
            total = (data.get("amount") or {}).get("total")
            openid = (data.get("payer") or {}).get("openid")
            no = data.get("out_trade_no", "")
            if not (isinstance(total, int) and total > 0 and openid and data.get("notify_url")
                    and re.fullmatch(r"[A-Za-z0-9_*|-]{6,32}", no)):
                return self._error(400, "PARAM_ERROR", "参数错误")
            with self._lock:
                known = self.orders.get(no)
                if known is not None and known["trade_state"] == "CLOSED":
                    return self._error(400, "ORDER_CLOSED", "订单已关闭")
                if known is not None and (known["total"], known["openid"]) != (total, openid):
                    return self._error(400, "INVALID_REQUEST", "201 商户订单号重复")
                if known is None:
                    known = self.orders[no] = {
                        "appid": self.appid, "mchid": self.mchid, "openid": openid, "total": total,
                        "description": data.get("description"), "notify_url": data["notify_url"],
                        "time_expire": data.get("time_expire"), "trade_state": "NOTPAY", "trade_state_desc": "未支付",
                        "prepay_id": f"wx{secrets.token_hex(15)}"}
            return self._signed({"prepay_id": known["prepay_id"]})

        async def query(request: Request) -> Response:
            _, refused = await self._authorized(request)
            if refused:
                return refused
            no = request.path_params["no"]
            if request.query_params.get("mchid") != self.mchid:
                return self._error(400, "PARAM_ERROR", "mchid不匹配")
            if no not in self.orders:
                return self._error(404, "ORDER_NOT_EXIST", "订单不存在")
            return self._signed(self.transaction(no))

        async def close(request: Request) -> Response:
            _, refused = await self._authorized(request)
            if refused:
                return refused
            with self._lock:
                order = self.orders.get(request.path_params["no"])
                if order is None:
                    return self._error(404, "ORDER_NOT_EXIST", "订单不存在")
                if order["trade_state"] == "SUCCESS":
                    return self._error(400, "ORDERPAID", "订单已支付")
                order.update(trade_state="CLOSED", trade_state_desc="已关闭")
            return Response(status_code=204, headers=self._signed_headers(""))  # WeChat signs the empty body

        async def refund(request: Request) -> Response:
            body, refused = await self._authorized(request)
            if refused:
                return refused
            data = json.loads(body)
            amount = data.get("amount") or {}
            no, out_refund_no = data.get("out_trade_no", ""), data.get("out_refund_no", "")
            if not (re.fullmatch(r"[A-Za-z0-9_*|@-]{1,64}", out_refund_no) and data.get("notify_url")
                    and amount.get("currency") == "CNY"):
                return self._error(400, "PARAM_ERROR", "参数错误")
            with self._lock:
                order = self.orders.get(no)
                if order is None:
                    return self._error(404, "RESOURCE_NOT_EXISTS", "订单不存在")
                if order["trade_state"] not in ("SUCCESS", "REFUND"):
                    return self._error(400, "INVALID_REQUEST", "订单未支付")
                if amount.get("total") != order["total"] or not (
                        isinstance(amount.get("refund"), int) and 0 < amount["refund"] <= order["total"]):
                    return self._error(400, "PARAM_ERROR", "退款金额错误")
                known = self.refunds.get(out_refund_no)
                if known is None:  # idempotent by out_refund_no, as WeChat is
                    known = self.refunds[out_refund_no] = {
                        "out_trade_no": no, "transaction_id": order["transaction_id"], "total": order["total"],
                        "refund": amount["refund"], "notify_url": data["notify_url"], "status": "PROCESSING",
                        "refund_id": f"5030{secrets.randbelow(10**24):024d}", "created_at": int(time.time())}
            return self._signed(self._refund_record(out_refund_no))

        async def query_refund(request: Request) -> Response:
            _, refused = await self._authorized(request)
            if refused:
                return refused
            if request.path_params["no"] not in self.refunds:
                return self._error(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
            return self._signed(self._refund_record(request.path_params["no"]))

        async def certificates(request: Request) -> Response:
            _, refused = await self._authorized(request)
            if refused:
                return refused
            with self._lock:
                held = list(self.certificates)
            data = []
            for cert in held:
                nonce = secrets.token_hex(6)
                pem = cert.public_bytes(serialization.Encoding.PEM)
                data.append({"serial_no": format(cert.serial_number, "X"),
                             "effective_time": china_time(cert.not_valid_before_utc.timestamp()),
                             "expire_time": china_time(cert.not_valid_after_utc.timestamp()),
                             "encrypt_certificate": {
                                 "algorithm": "AEAD_AES_256_GCM", "nonce": nonce, "associated_data": "certificate",
                                 "ciphertext": base64.b64encode(AESGCM(self.apiv3_key.encode()).encrypt(
                                     nonce.encode(), pem, b"certificate")).decode()}})
            # Signed with the newest platform certificate, as WeChat signs every answer (whatever the mode).
            body = json.dumps({"data": data})
            headers = self._signed_headers(body)
            headers["Wechatpay-Serial"] = format(held[-1].serial_number, "X")
            return Response(body, media_type="application/json", headers=headers)

        return Starlette(routes=[
            Route("/sns/jscode2session", jscode2session),
            Route("/v3/pay/transactions/jsapi", jsapi, methods=["POST"]),
            Route("/v3/pay/transactions/out-trade-no/{no}", query),
            Route("/v3/pay/transactions/out-trade-no/{no}/close", close, methods=["POST"]),
            Route("/v3/refund/domestic/refunds", refund, methods=["POST"]),
            Route("/v3/refund/domestic/refunds/{no}", query_refund),
            Route("/v3/certificates", certificates),
        ])

    def _refund_record(self, out_refund_no: str) -> dict[str, Any]:
        """A refund as WeChat's refund and refund-query answers describe it."""
        with self._lock:
            r = dict(self.refunds[out_refund_no])
        record: dict[str, Any] = {
            "refund_id": r["refund_id"], "out_refund_no": out_refund_no, "transaction_id": r["transaction_id"],
            "out_trade_no": r["out_trade_no"], "channel": "ORIGINAL", "user_received_account": "支付用户零钱",
            "create_time": china_time(r["created_at"]), "status": r["status"], "funds_account": "AVAILABLE",
            "amount": {"total": r["total"], "refund": r["refund"], "payer_total": r["total"],
                       "payer_refund": r["refund"], "currency": "CNY"}}
        if r["status"] == "SUCCESS":
            record["success_time"] = china_time(r["success_at"])
        return record
