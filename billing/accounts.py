"""Reading the ledger for people: a user's account and own orders, and the operator's sales stats.

Nothing here records a fact; the views are what the edge's ``/account``, ``/pay/orders`` and ``/pay/stats``
answer (lists of plain dicts, as the messages carry them).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from bus.billing import (
    ORDER_STATUSES,
    PAID,
    AccountView,
    OrdersReply,
    SessionRequest,
    StatsReply,
    StatsRequest,
)

from .ledger import DAY, Ledger, Order, UseRecord, china_day
from .settings import BillingSettings
from .signin import Sessions


def order_dict(order: Order) -> dict[str, Any]:
    """An order in a list (``/pay/orders``, ``/account``): what its owner may see."""
    return {"out_trade_no": order.out_trade_no, "product": order.product, "amount": order.amount,
            "credits": order.credits, "unlimited_days": order.unlimited_days, "status": order.status,
            "created_at": order.created_at, "paid_at": order.paid_at}


def use_dict(use: UseRecord) -> dict[str, Any]:
    """A charged enhancement in ``/account``."""
    return {"task_id": use.task_id, "use": use.use, "reserved_at": use.reserved_at, "charged_at": use.settled_at}


class Accounts:
    def __init__(self, settings: BillingSettings, ledger: Ledger, sessions: Sessions) -> None:
        self.settings = settings
        self.ledger = ledger
        self.sessions = sessions

    async def account(self, req: SessionRequest) -> AccountView:
        openid = self.sessions.openid(req.token)
        now = time.time()
        account = await self.ledger.account(openid)
        until = account.unlimited_until
        held = await self.ledger.held(openid, now - self.settings.reservation_hold)
        free_left = max(0, self.settings.free_daily - await self.ledger.free_used(openid, china_day(now)))
        paid = [order_dict(o) for o in await self.ledger.orders_of(openid) if o.status == PAID]
        return AccountView(openid=openid, credits=max(0, account.credits - held), credits_reserved=held,
                           unlimited=until > now, unlimited_until=until if until > now else None,
                           free_daily=self.settings.free_daily, free_left_today=free_left,
                           orders=paid, uses=[use_dict(u) for u in await self.ledger.uses_of(openid)])

    async def orders(self, req: SessionRequest) -> OrdersReply:
        openid = self.sessions.openid(req.token)
        return OrdersReply(orders=[order_dict(o) for o in await self.ledger.orders_of(openid)])

    async def stats(self, req: StatsRequest) -> StatsReply:
        days = min(max(req.days, 1), 366)
        stats = await self.ledger.stats(time.time() - days * DAY)
        return StatsReply(by_status={s: stats.by_status.get(s, 0) for s in (*ORDER_STATUSES, *stats.by_status)},
                          by_day=[asdict(d) for d in stats.by_day], paid_orders=sum(d.orders for d in stats.by_day),
                          paid_amount=sum(d.amount for d in stats.by_day))
