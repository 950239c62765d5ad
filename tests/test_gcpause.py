"""The cyclic garbage collector is off while a suite is collected, and only then; while
results pile up, what is kept is frozen now and then, its garbage collected first."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from orchestrator.worker.gcpause import Freezer, paused_gc


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


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("gc_state", "unfrozen")
def test_what_is_kept_is_frozen_every_so_many_results_and_garbage_is_not() -> None:
    gc.enable()
    freezer = Freezer(every=10)
    kept = [_Node() for _ in range(3)]
    garbage = _Node()
    garbage.other = _Node()
    garbage.other.other = garbage  # a cycle only the collector frees
    gone = weakref.ref(garbage)
    del garbage
    frozen = gc.get_freeze_count()
    freezer.grew(9)
    assert gc.get_freeze_count() == frozen and gone() is not None  # not yet
    freezer.grew(1)
    assert gone() is None  # collected, not frozen
    assert gc.get_freeze_count() > frozen and kept


@pytest.mark.usefixtures("gc_state", "unfrozen")
def test_nothing_is_frozen_while_the_collector_is_off() -> None:
    gc.disable()
    frozen = gc.get_freeze_count()
    Freezer(every=1).grew(5)
    assert gc.get_freeze_count() == frozen
