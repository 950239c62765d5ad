"""Integration tests against a real SQLite database file."""

import sqlite3

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("db") / "orders.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL)")
    conn.executemany(
        "INSERT INTO orders (customer, total) VALUES (?, ?)",
        [(f"customer{i % 500}", (i * 7919) % 1000 / 10) for i in range(200_000)],
    )
    conn.commit()
    yield conn
    conn.close()


def test_row_count(db):
    assert db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 200_000


def test_revenue_per_customer_is_positive(db):
    rows = db.execute("SELECT customer, SUM(total) FROM orders GROUP BY customer").fetchall()
    assert len(rows) == 500
    assert all(total > 0 for _, total in rows)


def test_no_negative_totals(db):
    assert db.execute("SELECT COUNT(*) FROM orders WHERE total < 0").fetchone()[0] == 0
