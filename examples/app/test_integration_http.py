"""Integration tests against a real HTTP service on loopback, started once per module."""

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.integration


class Inventory(BaseHTTPRequestHandler):
    stock = {"apple": 3, "pear": 0}

    def do_GET(self):
        time.sleep(0.05)  # a service with realistic latency
        name = self.path.strip("/")
        if name not in self.stock:
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps({"item": name, "stock": self.stock[name]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Inventory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    time.sleep(0.5)  # a service that takes a moment to warm up
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("item,stock", [("apple", 3), ("pear", 0)])
def test_stock_lookup(service, item, stock):
    with urllib.request.urlopen(f"{service}/{item}", timeout=5) as response:
        assert json.load(response) == {"item": item, "stock": stock}


def test_unknown_item_is_404(service):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{service}/plum", timeout=5)
    assert info.value.code == 404


def test_burst_of_requests(service):
    for _ in range(20):
        with urllib.request.urlopen(f"{service}/apple", timeout=5) as response:
            assert response.status == 200
