"""The cyclic garbage collector is off while a suite is collected, and only then."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from orchestrator.worker.gcpause import paused_gc


@pytest.fixture
def gc_state() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    (gc.enable if enabled else gc.disable)()


@pytest.mark.usefixtures("gc_state")
def test_paused_then_restored_even_after_an_error() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), paused_gc():
        assert not gc.isenabled()
        raise RuntimeError("collection failed")
    assert gc.isenabled()


@pytest.mark.usefixtures("gc_state")
def test_left_off_when_it_was_off() -> None:
    gc.disable()
    with paused_gc():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_controller_collects_paused(pytester: pytest.Pytester) -> None:
    """``--ray --collect-only`` collects as a run does, without starting Ray."""
    pytester.makeconftest(
        """
        import gc

        def pytest_collection_modifyitems(items):
            print("gc during collection:", gc.isenabled())
        """
    )
    pytester.makepyfile(test_one="def test_one(): pass")
    result = pytester.runpytest("--ray", "--collect-only", "-s")
    result.stdout.fnmatch_lines(["*gc during collection: False*", "*1 test collected*"])
    assert gc.isenabled()
