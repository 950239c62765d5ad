"""Which tests pytest sets up together: the fixture group of each collected item.

Two tests that follow each other in collection order share a group when pytest keeps
their module and class fixtures, and the parameters of fixtures scoped higher than a
function, between them. The scheduler cuts the suite at group boundaries where it can
(see orchestrator.planner.Plan.groups).
"""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from pytest_orchestrator.pytest_private import fixture_scopes


def fixture_group(item: pytest.Item) -> Hashable:
    """``item``'s file, class and the parameters of its fixtures scoped above a function."""
    cls = getattr(item, "cls", None)
    owner = item.parent.nodeid if cls is not None and item.parent is not None else None
    return (str(item.path), owner, _scoped_params(item))


def _scoped_params(item: pytest.Item) -> tuple[tuple[str, int], ...]:
    """(name, index) of each parameter of a fixture scoped to a class, module, package or
    session; empty for an item without parameters."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return ()
    scopes = fixture_scopes(callspec)
    indices = getattr(callspec, "indices", {})
    return tuple(
        (name, index)
        for name, index in sorted(indices.items())
        if scopes.get(name, "function") != "function"
    )
