"""Normalisation of SKUs, URL slugs and search queries."""

import pytest

from examples.app.shop import normalize_query, normalize_sku, slugify


@pytest.mark.parametrize(
    "raw,sku",
    [
        ("mug-01", "MUG-01"),
        (" mug 01 ", "MUG-01"),
        ("Tea - Green", "TEA-GREEN"),
    ],
)
def test_normalize_sku(raw, sku):
    assert normalize_sku(raw) == sku


@pytest.mark.parametrize("raw", ["", "mug/01", "ä-1"])
def test_normalize_sku_rejects_invalid(raw):
    with pytest.raises(ValueError, match="invalid SKU"):
        normalize_sku(raw)


def test_normalize_sku_is_idempotent():
    for raw in ("mug 01", "Tea_Green", "X"):
        assert normalize_sku(normalize_sku(raw)) == normalize_sku(raw)


@pytest.mark.parametrize(
    "text,slug",
    [
        ("Crème Brûlée (250 g)", "creme-brulee-250-g"),
        ("Ångström ﬁlter kit", "angstrom-filter-kit"),
        ("東京", ""),
    ],
)
def test_slugify(text, slug):
    assert slugify(text) == slug


@pytest.mark.parametrize(
    "text,query",
    [
        ("  Green   TEA ", "green tea"),
        ("Straße", "strasse"),
    ],
)
def test_normalize_query(text, query):
    assert normalize_query(text) == query
