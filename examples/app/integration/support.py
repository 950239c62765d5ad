"""Helpers for the integration tests: a sample catalogue, a JSON client, server start/stop."""

import json
import threading
import time
import urllib.error
import urllib.request

from examples.app.service import make_server
from examples.app.shop import Product

CATEGORIES = ("standard", "food", "books")


def catalogue(n=300):
    """A deterministic catalogue: SKU-0000 .. SKU-<n-1>, every seventh one digital."""
    return [
        Product(
            sku=f"SKU-{i:04d}",
            name=f"Product {i}",
            price=199 + (i * 7919) % 9_800,
            category=CATEGORIES[i % 3],
            digital=i % 7 == 0,
        )
        for i in range(n)
    ]


class Client:
    def __init__(self, base_url):
        self.base_url = base_url

    def request(self, method, path, body=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.load(exc)

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body=None, raw=None):
        return self.request("POST", path, body, raw)


def start_server(db_path):
    server = make_server(db_path)
    thread = threading.Thread(target=server.serve_forever, name="shop-api", daemon=True)
    thread.start()
    client = Client(f"http://127.0.0.1:{server.server_address[1]}")
    deadline = time.monotonic() + 10
    while True:  # wait until the service answers, as a deployment check would
        try:
            if client.get("/health") == (200, {"status": "ok"}):
                return server, thread, client
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def stop_server(server, thread):
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
