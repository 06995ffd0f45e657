"""What can be bought: products and prices come from configuration, amounts in integer fen.

The client names a product id; the amount is always ours. The defaults are the mini-program's
packages: 基础包 ¥9.9 = 10 uses, 高级包 ¥29.9 = 100 uses, 无限包 ¥99.9 = unlimited for 30 days.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from bus.settings import SettingsError

_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    #: Price in fen (¥9.9 = 990).
    amount: int
    #: Uses granted; 0 for a purely time-based product.
    credits: int = 0
    #: Days of unlimited use granted (0: none).
    unlimited_days: int = 0

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise SettingsError(f"product id {self.id!r} must be lowercase letters, digits and '_'")
        if not self.name:
            raise SettingsError(f"product {self.id!r} needs a name")
        if not (isinstance(self.amount, int) and 0 < self.amount <= 10_000_000):
            raise SettingsError(f"product {self.id!r}: amount must be a positive integer number of fen")
        if self.credits < 0 or self.unlimited_days < 0 or (self.credits == 0 and self.unlimited_days == 0):
            raise SettingsError(f"product {self.id!r} must grant credits or unlimited days")


DEFAULT_PRODUCTS: tuple[Product, ...] = (
    Product("basic", "基础包", 990, credits=10),
    Product("premium", "高级包", 2990, credits=100),
    Product("unlimited", "无限包", 9990, unlimited_days=30),
)


def parse_products(raw: str) -> tuple[Product, ...]:
    """``BILLING_PRODUCTS``: a JSON list of ``{"id", "name", "amount", "credits"?, "unlimited_days"?}``."""
    try:
        items: Any = json.loads(raw)
    except ValueError as e:
        raise SettingsError(f"BILLING_PRODUCTS is not valid JSON: {e}") from e
    if not isinstance(items, list) or not items:
        raise SettingsError("BILLING_PRODUCTS must be a non-empty JSON list")
    try:
        products = tuple(Product(**item) for item in items)
    except TypeError as e:
        raise SettingsError(f"BILLING_PRODUCTS has an unknown or missing field: {e}") from e
    if len({p.id for p in products}) != len(products):
        raise SettingsError("BILLING_PRODUCTS lists a product id twice")
    return products
