"""The billing service (thin for now): a ledger projected from the bus's durable facts."""

from .service import main, serve
from .settings import BillingSettings

__all__ = ["BillingSettings", "main", "serve"]
