"""The shop's JSON HTTP API, on the standard library's threading HTTP server.

GET  /health              -> {"status": "ok"}
GET  /products/<sku>      -> the product, 404 when unknown
POST /quote               -> {"items": [{"sku": .., "quantity": ..}], "discount": "CODE"}
POST /orders              -> like /quote plus "customer"; 201 with {"id": .., "total": ..}
GET  /orders/<id>         -> the stored order, 404 when unknown
"""

from __future__ import annotations

import json
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from examples.app.shop import Cart, Discount, normalize_sku
from examples.app.store import Store, UnknownProduct

DISCOUNTS = {
    "WELCOME10": Discount("WELCOME10", percent=10),
    "FIVEOFF": Discount("FIVEOFF", amount=5_00, min_subtotal=20_00),
}


class BadRequest(Exception):
    pass


class ShopHandler(BaseHTTPRequestHandler):
    server: ShopServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if parts == ["health"]:
            self.reply(200, {"status": "ok"})
        elif len(parts) == 2 and parts[0] == "products":
            try:
                product = self.server.store.product(normalize_sku(parts[1]))
            except (UnknownProduct, ValueError):
                self.reply(404, {"error": f"no product {parts[1]}"})
            else:
                self.reply(200, asdict(product))
        elif len(parts) == 2 and parts[0] == "orders" and parts[1].isdigit():
            order = self.server.store.order(int(parts[1]))
            if order is None:
                self.reply(404, {"error": f"no order {parts[1]}"})
            else:
                self.reply(200, order)
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        try:
            body = self.read_json()
            if self.path == "/quote":
                cart, discount = self.cart_from(body)
                quote = cart.quote(discount)
                self.reply(200, {**asdict(quote), "total": quote.total})
            elif self.path == "/orders":
                customer = body.get("customer")
                if not isinstance(customer, str) or not customer:
                    raise BadRequest("customer is required")
                cart, discount = self.cart_from(body)
                order_id = self.server.store.place_order(customer, cart, discount)
                self.reply(201, {"id": order_id, "total": cart.quote(discount).total})
            else:
                self.reply(404, {"error": "not found"})
        except BadRequest as exc:
            self.reply(400, {"error": str(exc)})

    def read_json(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except json.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON: {exc.msg}") from None
        if not isinstance(body, dict):
            raise BadRequest("expected a JSON object")
        return body

    def cart_from(self, body: dict[str, Any]) -> tuple[Cart, Discount | None]:
        items = body.get("items")
        if not isinstance(items, list) or not items:
            raise BadRequest("items must be a non-empty list")
        code = body.get("discount")
        if code is not None and code not in DISCOUNTS:
            raise BadRequest(f"unknown discount code {code}")
        try:
            cart = self.server.store.cart(
                (normalize_sku(item["sku"]), int(item.get("quantity", 1))) for item in items
            )
        except UnknownProduct as exc:
            raise BadRequest(f"unknown product {exc.args[0]}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"invalid item: {exc}") from None
        return cart, DISCOUNTS.get(code) if code else None

    def reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean


class ShopServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: Store) -> None:
        super().__init__(address, ShopHandler)
        self.store = store


def make_server(db_path: Path, host: str = "127.0.0.1", port: int = 0) -> ShopServer:
    store = Store(db_path)
    store.migrate()
    return ShopServer((host, port), store)
