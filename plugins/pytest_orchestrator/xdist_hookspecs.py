"""pytest-xdist's controller hooks, declared when pytest-xdist itself is not loaded.

Plugins with pytest-xdist support implement them (pytest-cov, pytest-randomly,
pytest-rerunfailures); the Ray session calls them as xdist's controller does (see
:mod:`pytest_orchestrator.xdist_nodes`). The signatures are xdist's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest


@pytest.hookspec()
def pytest_xdist_setupnodes(config: pytest.Config, specs: Sequence[Any]) -> None:
    """Called before any worker is set up."""


@pytest.hookspec()
def pytest_configure_node(node: Any) -> None:
    """Configure a worker's node before the worker starts (its ``workerinput``)."""


@pytest.hookspec()
def pytest_testnodeready(node: Any) -> None:
    """A worker is ready to run tests."""


@pytest.hookspec()
def pytest_testnodedown(node: Any, error: object | None) -> None:
    """A worker ended; ``node.workeroutput`` holds what it sent back, ``error`` why it
    ended otherwise."""
