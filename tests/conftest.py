"""Shared fixtures: one Ray cluster for the whole test session, pytester in subprocesses."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

# Property tests check outcomes, not speed: no per-example deadline and no "too slow"
# health check, which a busy machine fails, as in Hypothesis' own profile for CI. Every
# other setting stays that of the profile Hypothesis chose (its CI profile under CI=true).
_active = settings.get_profile(settings.get_current_profile_name())
settings.register_profile(
    "outcomes",
    parent=_active,
    deadline=None,
    suppress_health_check=list(
        dict.fromkeys([*_active.suppress_health_check, HealthCheck.too_slow])
    ),
)
settings.load_profile("outcomes")

DATA = Path(__file__).parent / "data"

#: The dev extras install the plugins of the compatibility matrix (tests/test_compat.py,
#: which loads them on purpose, and so does this suite's own session). The pytest
#: sessions the other tests start leave them out: pytest-randomly would shuffle their
#: order, pytest-rerunfailures needs the controller's pytest_configure_node (which a
#: worker process driven directly by a test does not get), and together they add more
#: than a second to every pytest process's start (hypothesis' plugin most of it).
BLOCKED_PLUGINS = " ".join(
    f"-p no:{name}"
    for name in (
        "randomly",
        "rerunfailures",
        "hypothesispytest",
        "pytest_cov",
        "asyncio",
        "pytest_mock",
        "timeout",
        "html",
        "html_fixtures",
        "metadata",
        "benchmark",
        "django",
    )
)
os.environ["PYTEST_ADDOPTS"] = f"{os.environ.get('PYTEST_ADDOPTS', '')} {BLOCKED_PLUGINS}".strip()


@pytest.fixture(autouse=True)
def _blocked_in_pytester(request: pytest.FixtureRequest) -> None:
    """pytester removes PYTEST_ADDOPTS from its sessions' environment: put it back."""
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("PYTEST_ADDOPTS", BLOCKED_PLUGINS)


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
