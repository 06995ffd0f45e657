"""Billing's rooms wired together, in the one place that knows who needs what.

Each room gets only its own dependencies (ledger, facts, settings, WeChat, the session checker, the balance
lock); ``Rooms`` holds the result for the process and the tests, and does nothing itself. The endpoints'
table (``endpoints.routes``) maps each subject to one room's method.
"""

from __future__ import annotations

from dataclasses import dataclass

from .accounts import Accounts
from .facts import Facts
from .ledger import Ledger
from .orders import Orders
from .reconciler import Reconciler
from .refunds import Refunds
from .settings import BillingSettings
from .shared import Balances
from .signin import Sessions
from .uses import Uses
from .wechat import WeChat


@dataclass(frozen=True)
class Rooms:
    sessions: Sessions
    orders: Orders
    refunds: Refunds
    uses: Uses
    accounts: Accounts
    reconciler: Reconciler

    @classmethod
    def open(cls, settings: BillingSettings, ledger: Ledger, facts: Facts, wechat: WeChat | None) -> Rooms:
        balances = Balances()  # one per process: uses and refunds decide on the same balances
        sessions = Sessions(settings, wechat)
        orders = Orders(settings, ledger, facts, sessions, wechat)
        refunds = Refunds(settings, ledger, facts, wechat, balances)
        return cls(sessions=sessions, orders=orders, refunds=refunds,
                   uses=Uses(settings, ledger, facts, sessions, balances),
                   accounts=Accounts(settings, ledger, sessions),
                   reconciler=Reconciler(settings, ledger, orders, refunds, with_wechat=wechat is not None))
