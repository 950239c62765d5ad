"""A real SQLite file and a real HTTP server on loopback, started by the tests themselves."""

import pytest

from examples.app.store import Store

from .support import catalogue, start_server, stop_server


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "shop.sqlite")
    store.migrate()
    store.add_products(catalogue())
    return store


@pytest.fixture(scope="module")
def api_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "shop.sqlite"
    store = Store(path)
    store.migrate()
    store.add_products(catalogue())
    return path


@pytest.fixture(scope="module")
def api(api_db):
    server, thread, client = start_server(api_db)
    yield client
    stop_server(server, thread)
