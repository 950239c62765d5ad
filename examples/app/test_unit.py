"""Fast unit tests of a small pricing module (the bulk of an app suite)."""

import pytest


def price_with_tax(net: float, rate: float) -> float:
    if net < 0 or rate < 0:
        raise ValueError("net and rate must be non-negative")
    return round(net * (1 + rate), 2)


def apply_discount(price: float, percent: int) -> float:
    if not 0 <= percent <= 100:
        raise ValueError("percent must be between 0 and 100")
    return round(price * (100 - percent) / 100, 2)


@pytest.mark.parametrize("net", [0, 1, 9.99, 100, 12345.67])
@pytest.mark.parametrize("rate", [0.0, 0.07, 0.2])
def test_price_with_tax(net, rate):
    assert price_with_tax(net, rate) == pytest.approx(net * (1 + rate), abs=0.01)


@pytest.mark.parametrize("percent", range(0, 101, 10))
def test_discount_never_increases_price(percent):
    assert apply_discount(80.0, percent) <= 80.0


def test_negative_net_is_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        price_with_tax(-1, 0.2)


def test_discount_bounds():
    with pytest.raises(ValueError):
        apply_discount(10, 101)
