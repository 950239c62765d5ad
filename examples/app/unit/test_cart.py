"""The cart and its quote: quantities, tax per category, shipping rules."""

import pytest

from examples.app.shop import (
    FREE_SHIPPING_FROM,
    MAX_QUANTITY,
    SHIPPING_FEE,
    Cart,
    Discount,
    Product,
)

MUG = Product("MUG-01", "Mug", 8_50)
TEA = Product("TEA-GREEN", "Green tea", 4_20, category="food")
NOVEL = Product("BOOK-7", "A novel", 12_00, category="books")
EBOOK = Product("EBOOK-7", "A novel (e-book)", 7_99, category="books", digital=True)


@pytest.fixture
def cart():
    return Cart()


def test_empty_cart(cart):
    assert len(cart) == 0
    assert cart.quote().total == 0


def test_adding_the_same_product_merges_lines(cart):
    cart.add(MUG)
    cart.add(MUG, 2)
    assert list(cart.lines) == ["MUG-01"]
    assert len(cart) == 3


def test_quantity_must_be_positive(cart):
    with pytest.raises(ValueError, match="positive"):
        cart.add(MUG, 0)


def test_quantity_limit_per_product(cart):
    cart.add(MUG, MAX_QUANTITY)
    with pytest.raises(ValueError, match="at most"):
        cart.add(MUG)


@pytest.mark.parametrize("remove,left", [(1, 2), (None, 0)])
def test_remove(cart, remove, left):
    cart.add(TEA, 3)
    cart.remove(TEA.sku, remove)
    assert len(cart) == left


def test_removing_an_unknown_product_fails(cart):
    with pytest.raises(KeyError):
        cart.remove("NOPE")


@pytest.mark.parametrize(
    "product,tax",
    [(MUG, 1_70), (TEA, 21), (NOVEL, 0)],
    ids=["standard", "food", "books"],
)
def test_tax_by_category(cart, product, tax):
    cart.add(product)
    assert cart.quote().tax == tax


def test_shipping_below_threshold(cart):
    cart.add(MUG)
    assert cart.quote().shipping == SHIPPING_FEE


def test_free_shipping_from_threshold(cart):
    cart.add(NOVEL, -(-FREE_SHIPPING_FROM // NOVEL.price))
    assert cart.quote().shipping == 0


def test_digital_only_orders_ship_for_free(cart):
    cart.add(EBOOK)
    assert cart.quote().shipping == 0


def test_discount_can_cost_free_shipping(cart):
    cart.add(NOVEL, 5)  # 60.00: free shipping
    assert cart.quote().shipping == 0
    assert cart.quote(Discount("P", percent=20)).shipping == SHIPPING_FEE  # 48.00


def test_discount_reduces_tax_in_proportion(cart):
    cart.add(MUG, 2)  # 17.00 at 20 %
    cart.add(NOVEL)  # 12.00 at 0 %
    quote = cart.quote(Discount("P", percent=10))
    assert quote.discount == 2_90
    assert quote.tax == 3_06  # 20 % of (17.00 - 1.70)


def test_total_adds_up(cart):
    cart.add(MUG, 3)
    cart.add(TEA, 2)
    cart.add(EBOOK)
    quote = cart.quote(Discount("FIVEOFF", amount=5_00, min_subtotal=20_00))
    assert quote.total == quote.subtotal - quote.discount + quote.tax + quote.shipping
    assert quote.total == 46_74


@pytest.mark.parametrize("price,category", [(-1, "standard"), (100, "toys")])
def test_invalid_products_are_rejected(price, category):
    with pytest.raises(ValueError):
        Product("X-1", "x", price, category)


@pytest.mark.integration
def test_cart_survives_a_database_round_trip(tmp_path):
    """Lives with the cart's unit tests but uses a real SQLite file, hence the marker."""
    from examples.app.store import Store

    store = Store(tmp_path / "shop.sqlite")
    store.migrate()
    store.add_products([MUG, TEA, NOVEL])
    cart = Cart()
    cart.add(MUG, 2)
    cart.add(NOVEL)
    order_id = store.place_order("ada", cart)
    order = store.order(order_id)
    assert order["lines"] == [["BOOK-7", 1], ["MUG-01", 2]]
    assert order["total"] == cart.quote().total
    assert store.cart((sku, qty) for sku, qty in order["lines"]).quote() == cart.quote()
