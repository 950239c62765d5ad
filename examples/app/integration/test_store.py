"""The SQLite store against a real database file."""

import sqlite3
import threading

import pytest

from examples.app.shop import Cart, Discount, Product
from examples.app.store import Store, UnknownProduct

from .support import catalogue


def test_migrate_is_idempotent(store):
    store.migrate()
    store.migrate()
    assert store.product("SKU-0001").name == "Product 1"


def test_product_round_trip(store):
    for product in catalogue()[:50]:
        assert store.product(product.sku) == product


def test_unknown_product(store):
    with pytest.raises(UnknownProduct):
        store.product("SKU-9999")


def test_sku_is_unique(store):
    with pytest.raises(sqlite3.IntegrityError):
        store.add_products([Product("SKU-0001", "Duplicate", 100)])


def test_order_round_trip(store):
    cart = store.cart([("SKU-0003", 2), ("SKU-0010", 1)])
    order_id = store.place_order("grace", cart, Discount("WELCOME10", percent=10))
    order = store.order(order_id)
    assert order["customer"] == "grace"
    assert order["lines"] == [["SKU-0003", 2], ["SKU-0010", 1]]
    assert order["total"] == cart.quote(Discount("WELCOME10", percent=10)).total


def test_failed_order_leaves_no_partial_rows(store):
    cart = store.cart([("SKU-0004", 1)])
    cart.add(Product("GHOST-1", "Not in the catalogue", 1_00))
    with pytest.raises(sqlite3.IntegrityError):
        store.place_order("linus", cart)
    assert store.order_count() == 0
    with store.connect() as conn:
        assert conn.execute("SELECT COUNT(*) FROM order_lines").fetchone()[0] == 0


def test_bulk_catalogue_import(tmp_path):
    store = Store(tmp_path / "big.sqlite")
    store.migrate()
    store.add_products(catalogue(90_000))
    with store.connect() as conn:
        rows = conn.execute(
            "SELECT category, COUNT(*), MIN(price), MAX(price) FROM products GROUP BY category"
        ).fetchall()
    assert {category: count for category, count, _, _ in rows} == {
        "standard": 30_000,
        "food": 30_000,
        "books": 30_000,
    }
    assert all(199 <= low <= high < 199 + 9_800 for _, _, low, high in rows)


def test_concurrent_orders_from_threads(store):
    errors = []

    def customer(name):
        try:
            for i in range(30):
                store.place_order(name, store.cart([(f"SKU-{(i * 13) % 300:04d}", 1 + i % 3)]))
        except Exception as exc:  # collected and reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=customer, args=(f"c{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert store.order_count() == 180
    assert set(store.revenue_by_customer()) == {f"c{n}" for n in range(6)}


def test_orders_survive_reopening_the_file(store):
    cart = Cart()
    cart.add(store.product("SKU-0042"), 3)
    order_id = store.place_order("barbara", cart)
    reopened = Store(store.path)
    assert reopened.order(order_id)["lines"] == [["SKU-0042", 3]]
