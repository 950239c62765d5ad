"""The JSON API over real HTTP on loopback, backed by a real SQLite file."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from examples.app.service import DISCOUNTS
from examples.app.store import Store

from .support import catalogue, start_server, stop_server


def test_health(api):
    assert api.get("/health") == (200, {"status": "ok"})


@pytest.mark.parametrize("sku", ["SKU-0007", "sku_0007"])
def test_product_lookup_normalises_the_sku(api, sku):
    status, product = api.get(f"/products/{sku}")
    assert status == 200
    assert product["sku"] == "SKU-0007"
    assert product["digital"] is True


@pytest.mark.parametrize("path", ["/products/SKU-9999", "/orders/999999"])
def test_not_found(api, path):
    status, body = api.get(path)
    assert status == 404
    assert "error" in body


def test_quote_matches_the_domain_model(api, api_db):
    items = [{"sku": "SKU-0011", "quantity": 2}, {"sku": "SKU-0012"}]
    status, quote = api.post("/quote", {"items": items, "discount": "WELCOME10"})
    assert status == 200
    cart = Store(api_db).cart([("SKU-0011", 2), ("SKU-0012", 1)])
    expected = cart.quote(DISCOUNTS["WELCOME10"])
    assert quote["total"] == expected.total
    assert quote["tax"] == expected.tax


@pytest.mark.parametrize(
    "body,raw,message",
    [
        (None, b"{not json", "invalid JSON"),
        ({"items": [{"sku": "SKU-0001"}], "discount": "FREE"}, None, "unknown discount"),
        ({"items": [{"sku": "SKU-9999"}]}, None, "unknown product"),
    ],
    ids=["json", "discount", "product"],
)
def test_bad_quotes_are_rejected(api, body, raw, message):
    status, reply = api.post("/quote", body, raw=raw)
    assert status == 400
    assert message in reply["error"]


def test_order_round_trip(api):
    status, created = api.post(
        "/orders", {"customer": "ada", "items": [{"sku": "SKU-0020", "quantity": 3}]}
    )
    assert status == 201
    status, order = api.get(f"/orders/{created['id']}")
    assert status == 200
    assert order["total"] == created["total"]
    assert order["lines"] == [["SKU-0020", 3]]


def test_order_needs_a_customer(api):
    status, reply = api.post("/orders", {"items": [{"sku": "SKU-0020"}]})
    assert (status, reply["error"]) == (400, "customer is required")


@pytest.mark.retries(2)
def test_burst_of_concurrent_orders(api, api_db):
    before = Store(api_db).order_count()

    def place(i):
        body = {"customer": f"load{i % 10}", "items": [{"sku": f"SKU-{i % 300:04d}"}]}
        return api.post("/orders", body)[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(place, range(120)))
    assert statuses == [201] * 120
    assert Store(api_db).order_count() == before + 120


def test_orders_survive_a_server_restart(tmp_path):
    db = tmp_path / "restart.sqlite"
    server, thread, client = start_server(db)
    try:
        Store(db).add_products(catalogue(20))
        status, created = client.post(
            "/orders", {"customer": "ken", "items": [{"sku": "SKU-0005", "quantity": 2}]}
        )
        assert status == 201
    finally:
        stop_server(server, thread)
    server, thread, client = start_server(db)
    try:
        status, order = client.get(f"/orders/{created['id']}")
        assert status == 200
        assert order["customer"] == "ken"
    finally:
        stop_server(server, thread)
