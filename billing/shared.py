"""What billing's rooms (``signin``, ``orders``, ``refunds``, ``uses``, ``accounts``) share, in one place.

- ``need_wechat``: WeChat is optional (a server without it still reserves anonymous uses), so every room that
  talks to WeChat holds ``WeChat | None`` and asks for it here, where "not configured" becomes one 503.
- ``open_notify``: payment and refund notifies are verified the same way (timestamp window, signature,
  decryption) before their content is read.
- ``Balances``: the lock under which a decision that reads a balance is recorded as a fact. Reserving a use
  (``Uses.reserve``) and taking back a refunded order's credits (``Refunds.apply``) both read credits minus
  held uses; under one lock neither sees the other half done. Billing runs as one process (its ledger is a
  local SQLite file), so a per-process lock is enough.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bus import texts
from bus.billing import NotifyRequest

from .errors import BillingError, NotifyRejected
from .notify import check_timestamp, lower_headers
from .wechat import WeChat


class Balances(asyncio.Lock):
    """The one lock held while a balance is read and the fact it decides is recorded."""


def need_wechat(wechat: WeChat | None) -> WeChat:
    """The WeChat client, or 503 when this server has none configured."""
    if wechat is None:
        raise BillingError(503, texts.BILLING_PAY_NOT_CONFIGURED())
    return wechat


async def open_notify(wechat: WeChat | None, window: float, req: NotifyRequest) -> dict[str, Any]:
    """A notify's verified, decrypted content: fresh (timestamp window), signed by WeChat, readable."""
    headers = lower_headers(req.headers)
    check_timestamp(headers, window)
    opened = await need_wechat(wechat).open_notify(headers, req.body)
    if not opened:
        raise NotifyRejected(401, "The notify's signature or encryption does not verify.")
    return opened
