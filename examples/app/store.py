"""SQLite persistence for the shop: the catalogue and placed orders.

One connection per call keeps the store safe to use from the HTTP server's threads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from examples.app.shop import Cart, Discount, Product

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS products (
        sku TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        price INTEGER NOT NULL CHECK (price >= 0),
        category TEXT NOT NULL,
        digital INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS orders (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        customer TEXT NOT NULL,
        subtotal INTEGER NOT NULL,
        discount INTEGER NOT NULL,
        tax INTEGER NOT NULL,
        shipping INTEGER NOT NULL,
        total INTEGER NOT NULL,
        created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
    )""",
    """CREATE TABLE IF NOT EXISTS order_lines (
        order_id INTEGER NOT NULL REFERENCES orders(id),
        sku TEXT NOT NULL REFERENCES products(sku),
        quantity INTEGER NOT NULL CHECK (quantity > 0),
        PRIMARY KEY (order_id, sku)
    )""",
    "CREATE INDEX IF NOT EXISTS orders_by_customer ON orders(customer)",
]


class UnknownProduct(KeyError):
    pass


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=10)
        conn.execute("PRAGMA foreign_keys = ON")
        try:
            with conn:  # commits on success, rolls back on an exception
                yield conn
        finally:
            conn.close()

    def migrate(self) -> None:
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            for statement in SCHEMA:
                conn.execute(statement)

    def add_products(self, products: Iterable[Product]) -> None:
        with self.connect() as conn:
            conn.executemany(
                "INSERT INTO products (sku, name, price, category, digital) VALUES (?, ?, ?, ?, ?)",
                ((p.sku, p.name, p.price, p.category, int(p.digital)) for p in products),
            )

    def product(self, sku: str) -> Product:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT sku, name, price, category, digital FROM products WHERE sku = ?", (sku,)
            ).fetchone()
        if row is None:
            raise UnknownProduct(sku)
        return Product(row[0], row[1], row[2], row[3], bool(row[4]))

    def cart(self, items: Iterable[tuple[str, int]]) -> Cart:
        cart = Cart()
        for sku, quantity in items:
            cart.add(self.product(sku), quantity)
        return cart

    def place_order(self, customer: str, cart: Cart, discount: Discount | None = None) -> int:
        if not cart.lines:
            raise ValueError("an order needs at least one line")
        quote = cart.quote(discount)
        with self.connect() as conn:
            cursor = conn.execute(
                "INSERT INTO orders (customer, subtotal, discount, tax, shipping, total) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (customer, quote.subtotal, quote.discount, quote.tax, quote.shipping, quote.total),
            )
            order_id = cursor.lastrowid
            conn.executemany(
                "INSERT INTO order_lines (order_id, sku, quantity) VALUES (?, ?, ?)",
                [(order_id, sku, quantity) for sku, (_, quantity) in cart.lines.items()],
            )
        assert order_id is not None
        return order_id

    def order(self, order_id: int) -> dict[str, object] | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT id, customer, subtotal, discount, tax, shipping, total "
                "FROM orders WHERE id = ?",
                (order_id,),
            ).fetchone()
            if row is None:
                return None
            lines = conn.execute(
                "SELECT sku, quantity FROM order_lines WHERE order_id = ? ORDER BY sku",
                (order_id,),
            ).fetchall()
        keys = ("id", "customer", "subtotal", "discount", "tax", "shipping", "total")
        return {**dict(zip(keys, row, strict=True)), "lines": [list(line) for line in lines]}

    def order_count(self) -> int:
        with self.connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0])

    def revenue_by_customer(self) -> dict[str, int]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT customer, SUM(total) FROM orders GROUP BY customer"
            ).fetchall()
        return dict(rows)
