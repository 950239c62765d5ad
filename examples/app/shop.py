"""A small shop domain: money parsing, SKU and text normalisation, carts and price quotes.

Amounts are integer cents throughout; rounding is half-up, per line, as on a printed receipt.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

#: VAT rate per product category.
TAX_RATES = {"standard": Decimal("0.20"), "food": Decimal("0.05"), "books": Decimal("0")}
#: Orders of physical goods at or above this subtotal (after discount) ship for free.
FREE_SHIPPING_FROM = 50_00
SHIPPING_FEE = 4_99
MAX_QUANTITY = 99

_SKU = re.compile(r"^[A-Z0-9]+(?:-[A-Z0-9]+)*$")


def round_cents(amount: Decimal) -> int:
    return int(amount.quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def parse_price(text: str) -> int:
    """Parse a price as typed by a person ("12.5", "$1,234.56", " 3 ") into cents."""
    cleaned = text.strip().lstrip("$€£").replace(",", "").strip()
    if not re.fullmatch(r"\d+(?:\.\d{1,2})?", cleaned):
        raise ValueError(f"not a price: {text!r}")
    try:
        return round_cents(Decimal(cleaned) * 100)
    except InvalidOperation:  # pragma: no cover - excluded by the pattern above
        raise ValueError(f"not a price: {text!r}") from None


def format_price(cents: int, currency: str = "EUR") -> str:
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{rest:02d} {currency}"


def normalize_sku(raw: str) -> str:
    """Upper-case a SKU and separate its parts with single dashes: " ab_12 x " -> "AB-12-X"."""
    sku = re.sub(r"[\s_\-]+", "-", raw.strip().upper()).strip("-")
    if not _SKU.match(sku):
        raise ValueError(f"invalid SKU: {raw!r}")
    return sku


def slugify(text: str) -> str:
    """A URL-safe ASCII slug: "Crème Brûlée (250 g)" -> "creme-brulee-250-g"."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def normalize_query(text: str) -> str:
    """Search input as the index stores it: case-folded, accents kept, single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price: int
    category: str = "standard"
    digital: bool = False

    def __post_init__(self) -> None:
        if self.price < 0:
            raise ValueError("price must not be negative")
        if self.category not in TAX_RATES:
            raise ValueError(f"unknown category: {self.category}")


@dataclass(frozen=True)
class Discount:
    code: str
    percent: int = 0
    amount: int = 0
    min_subtotal: int = 0

    def __post_init__(self) -> None:
        if bool(self.percent) == bool(self.amount):
            raise ValueError("a discount is either a percentage or an amount")
        if not 0 <= self.percent <= 100 or self.amount < 0:
            raise ValueError("discount out of range")

    def reduction(self, subtotal: int) -> int:
        if subtotal < self.min_subtotal:
            return 0
        if self.percent:
            return round_cents(Decimal(subtotal) * self.percent / 100)
        return min(self.amount, subtotal)


@dataclass(frozen=True)
class Quote:
    subtotal: int
    discount: int
    tax: int
    shipping: int

    @property
    def total(self) -> int:
        return self.subtotal - self.discount + self.tax + self.shipping


@dataclass
class Cart:
    lines: dict[str, tuple[Product, int]] = field(default_factory=dict)

    def add(self, product: Product, quantity: int = 1) -> None:
        if quantity < 1:
            raise ValueError("quantity must be positive")
        _, current = self.lines.get(product.sku, (product, 0))
        if current + quantity > MAX_QUANTITY:
            raise ValueError(f"at most {MAX_QUANTITY} of one product per order")
        self.lines[product.sku] = (product, current + quantity)

    def remove(self, sku: str, quantity: int | None = None) -> None:
        product, current = self.lines[sku]
        if quantity is None or quantity >= current:
            del self.lines[sku]
        else:
            self.lines[sku] = (product, current - quantity)

    def __len__(self) -> int:
        return sum(quantity for _, quantity in self.lines.values())

    @property
    def subtotal(self) -> int:
        return sum(product.price * quantity for product, quantity in self.lines.values())

    def quote(self, discount: Discount | None = None) -> Quote:
        subtotal = self.subtotal
        reduction = discount.reduction(subtotal) if discount else 0
        # The reduction is spread over the lines in proportion to their value, so that each
        # line is taxed at its own rate on what the customer actually pays for it.
        tax = 0
        for product, quantity in self.lines.values():
            line = product.price * quantity
            share = Decimal(line) * reduction / subtotal if subtotal else Decimal(0)
            tax += round_cents((line - share) * TAX_RATES[product.category])
        physical = any(not product.digital for product, _ in self.lines.values())
        free = subtotal - reduction >= FREE_SHIPPING_FROM
        shipping = SHIPPING_FEE if physical and not free else 0
        return Quote(subtotal=subtotal, discount=reduction, tax=tax, shipping=shipping)
