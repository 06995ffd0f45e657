"""Billing's errors. Each carries the HTTP status the edge answers with, because billing's answers
travel over the bus as ``nats.micro`` service errors (code = status) and the edge only translates.

    BillingError            a request billing refuses (400 bad input, 401/403 session, 404 unknown order, ...)
    ├── NotifyRejected      a WeChat notify that must not be trusted (forged, stale, wrong amount, ...)
    └── WeChatError         WeChat answered with an error or not at all (502/503)
"""

from __future__ import annotations


class BillingError(Exception):
    """A refused request: ``status`` is the HTTP status, ``message`` a sentence for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NotifyRejected(BillingError):
    """A notify that is not applied; WeChat is answered 4xx and retries (or gives up after ~24 h)."""


class WeChatError(BillingError):
    """WeChat's API failed; ``status`` 502 (it said no) or 503 (busy, unreachable)."""
