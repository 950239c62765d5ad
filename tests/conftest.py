"""Shared fixtures: one Ray cluster for the whole test session, pytester in subprocesses."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """Address of a local Ray cluster started once for the session and stopped after it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    # A declared GPU and a custom resource, so that placement by resources is tested on
    # machines without GPUs (Ray trusts what a node declares).
    ray.init(
        address="local",
        num_cpus=4,
        num_gpus=1,
        resources={"fast_disk": 2},
        include_dashboard=False,
        object_store_memory=128 * 1024 * 1024,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


#: Ray keeps the token of a local cluster in the home directory, which pytester changes.
RAY_TOKEN = Path.home() / ".ray" / "auth_token"


@pytest.fixture
def on_cluster(ray_address: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point pytester's subprocesses at the session's cluster."""
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    if RAY_TOKEN.exists() and "RAY_AUTH_TOKEN" not in os.environ:
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(RAY_TOKEN))
    return ray_address


@pytest.fixture
def junit_schema() -> Path:
    return DATA / "junit-10.xsd"
