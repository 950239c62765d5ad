"""Money parsing and formatting, discounts and tax rounding."""

from decimal import Decimal

import pytest

from examples.app.shop import Discount, format_price, parse_price, round_cents


@pytest.mark.parametrize(
    "text,cents",
    [
        ("12.5", 1250),
        ("  9.99 ", 999),
        ("$1,234.56", 123456),
    ],
)
def test_parse_price(text, cents):
    assert parse_price(text) == cents


@pytest.mark.parametrize("text", ["abc", "1.234", "-5"])
def test_parse_price_rejects_garbage(text):
    with pytest.raises(ValueError, match="not a price"):
        parse_price(text)


@pytest.mark.parametrize(
    "cents,text",
    [(5, "0.05 EUR"), (123456789, "1,234,567.89 EUR"), (-499, "-4.99 EUR")],
)
def test_format_price(cents, text):
    assert format_price(cents) == text


def test_format_then_parse_round_trips():
    for cents in (0, 1, 99, 100, 101, 4999, 123456):
        assert parse_price(format_price(cents).removesuffix(" EUR")) == cents


@pytest.mark.parametrize("amount,cents", [("2.5", 3), ("-0.5", -1)])
def test_rounding_is_half_up(amount, cents):
    assert round_cents(Decimal(amount)) == cents


def test_percentage_discount_never_exceeds_subtotal():
    for percent in (1, 10, 50, 100):
        for subtotal in (0, 1, 999, 10_000):
            assert 0 <= Discount("P", percent=percent).reduction(subtotal) <= subtotal


def test_fixed_discount_needs_minimum_subtotal():
    discount = Discount("FIVEOFF", amount=500, min_subtotal=2000)
    assert discount.reduction(1999) == 0
    assert discount.reduction(2000) == 500


def test_fixed_discount_is_capped_at_subtotal():
    assert Discount("BIG", amount=10_000).reduction(2_500) == 2_500


@pytest.mark.parametrize("kwargs", [{}, {"percent": 10, "amount": 100}, {"percent": 101}])
def test_invalid_discounts_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Discount("BAD", **kwargs)
