"""Billing's errors. Each carries the HTTP status the edge answers with, because billing's answers
travel over the bus as ``nats.micro`` service errors (code = status) and the edge only translates.

    BillingError            a request billing refuses (400 bad input, 401/403 session, 404 unknown order, ...)
    ├── NotifyRejected      a WeChat notify that must not be trusted (forged, stale, wrong amount, ...)
    └── WeChatError         WeChat answered with an error or not at all (502/503)

What the caller is told is a ``bus.texts`` catalogue entry (a ``Said``): it travels to the edge beside its
English, and the edge words it in the language of the person's request. A notify's refusal is read by
WeChat's servers, not a person, and stays a plain English string.
"""

from __future__ import annotations

from bus.texts import Said, verbatim


class BillingError(Exception):
    """A refused request: ``status`` is the HTTP status, ``said`` what the caller is told (``message``: its
    English)."""

    def __init__(self, status: int, message: Said | str) -> None:
        self.said = message if isinstance(message, Said) else verbatim(message)
        super().__init__(str(self.said))
        self.status = status
        self.message = str(self.said)


class NotifyRejected(BillingError):
    """A notify that is not applied; WeChat is answered 4xx and retries (or gives up after ~24 h)."""


class WeChatError(BillingError):
    """WeChat's API failed; ``status`` 502 (it said no) or 503 (busy, unreachable)."""
