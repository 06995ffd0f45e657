"""The billing service: WeChat sign-in and payments, and a credits ledger projected from the bus's facts."""

from .service import main, serve
from .settings import BillingSettings

__all__ = ["BillingSettings", "main", "serve"]
