"""Our session tokens for mini-program users: ``v1.<openid>.<expires>.<hmac>``, HMAC-SHA256 signed.

Billing issues and checks them (it alone holds the secret), so the edge only forwards the
``Authorization`` header. WeChat's ``session_key`` never leaves billing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from bus import texts

from .errors import BillingError

_VERSION = "v1"


def _mac(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(secret: bytes, openid: str, ttl: float, *, now: float | None = None) -> tuple[str, float]:
    """A token for ``openid`` valid ``ttl`` seconds, and when it expires."""
    expires = int((now if now is not None else time.time()) + ttl)
    payload = f"{_VERSION}.{openid}.{expires}"
    return f"{payload}.{_mac(secret, payload)}", float(expires)


def verify(secret: bytes, token: str, *, now: float | None = None) -> str:
    """The openid the token was issued to; ``BillingError(401)`` when it is malformed, forged or expired."""
    token = token.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != _VERSION or not parts[2].isdigit():
        raise BillingError(401, texts.BILLING_SIGN_IN_FIRST())
    payload = ".".join(parts[:3])
    if not hmac.compare_digest(parts[3], _mac(secret, payload)):
        raise BillingError(401, texts.BILLING_SESSION_INVALID())
    if int(parts[2]) < (now if now is not None else time.time()):
        raise BillingError(401, texts.BILLING_SESSION_EXPIRED())
    return parts[1]
