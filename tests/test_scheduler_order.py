"""Collection order inside every worker: the scheduler's invariant over random suites.

Each worker runs the tests of a file in collection order and never goes back to one it
passed, so it never re-enters a class or a parameter group it has left. These properties
replay random suites (files of module-level tests and classes, random durations and entry
costs) on random numbers of workers, with head starts and lost workers, through the real
planner and scheduler.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.simulate import simulate
from orchestrator.scheduling.head_start import LastCollection, plan_head_start
from orchestrator.scheduling.planner import Plan, make_plan
from orchestrator.scheduling.scheduler import Scheduler, file_of


@dataclass
class Suite:
    nodeids: list[str]
    durations: list[float]
    entry_costs: dict[str, float]


@st.composite
def suites(draw: st.DrawFn, classes: bool = True) -> Suite:
    """Files of runs of module-level tests and classes, in collection order."""
    nodeids: list[str] = []
    names = ["", "TestA", "TestB", "TestC"] if classes else [""]
    for f in range(draw(st.integers(1, 5))):
        parts = draw(
            st.lists(st.tuples(st.sampled_from(names), st.integers(1, 8)), min_size=1, max_size=4)
        )
        for name, count in parts:
            prefix = f"t/test_f{f}.py::" + (f"{name}::" if name else "")
            base = len(nodeids)
            nodeids.extend(f"{prefix}test_{base + t}" for t in range(count))
    durations = draw(
        st.lists(
            st.sampled_from([0.0, 0.01, 0.05, 0.2, 1.0, 3.0, 10.0]),
            min_size=len(nodeids),
            max_size=len(nodeids),
        )
    )
    files = sorted({file_of(n) for n in nodeids})
    costs = draw(st.lists(st.sampled_from([None, 0.0, 0.5]), min_size=len(files)))
    entry_costs = {f: c for f, c in zip(files, costs, strict=False) if c is not None}
    return Suite(nodeids, durations, entry_costs)


@dataclass
class Replay:
    """What each worker was given, in order, and how each test ended."""

    given: dict[str, list[int]] = field(default_factory=dict)
    ended: list[int] = field(default_factory=list)
    out_of_order: int = 0
    makespan: float = 0.0


def replay(
    plan: Plan,
    suite: Suite,
    workers: int,
    *,
    losses: list[int] = (),  # type: ignore[assignment]
    replace: bool = True,
    head_start: bool = False,
) -> Replay:
    """Run ``plan`` on simulated workers; at each number of ended tests in ``losses`` the
    busiest worker is lost (its running test ends there, the rest is requeued), and a
    replacement joins when ``replace``."""
    sched = Scheduler(plan, workers, entry_costs=suite.entry_costs)
    names = [f"w{i}" for i in range(workers)]
    live = list(names)
    result = Replay(given={n: [] for n in names})
    pending: dict[str, deque[int]] = {n: deque() for n in names}
    if head_start:
        last = LastCollection(tuple(plan.nodeids), {}, seconds=1.0)
        history = dict(zip(plan.nodeids, plan.estimates, strict=True))
        start = plan_head_start(last, history, workers, entry_costs=suite.entry_costs)
        if start is not None:
            where = {n: i for i, n in enumerate(plan.nodeids)}
            for w, name in enumerate(names[: len(start.batches)]):
                guessed = [where[start.nodeids[g]] for g in start.given(w)]
                given = sched.give(name, guessed)
                pending[name].extend(given)
                result.given[name].extend(given)
    events: list[tuple[float, int, str]] = [(0.0, i, n) for i, n in enumerate(names)]
    turn = len(names)
    losses_left = sorted(losses)
    while events:
        now, _, worker = heapq.heappop(events)
        if worker not in live:
            continue
        turn += 1
        assert turn < 100 * (len(plan.nodeids) + workers + 10), "workers wait for each other"
        if pending[worker]:  # it finished the test it was running
            index = pending[worker].popleft()
            sched.finished(worker, index)
            result.ended.append(index)
            result.makespan = max(result.makespan, now)
        if losses_left and len(result.ended) >= losses_left[0] and (replace or len(live) > 1):
            losses_left.pop(0)
            victim = max(live, key=lambda w: len(pending[w]))
            running, _requeued = sched.worker_lost(victim)
            live.remove(victim)
            if running is not None:
                result.ended.append(running)
            pending[victim].clear()
            if replace:
                sched.add_worker()
                name = f"w{len(result.given)}"
                result.given[name], pending[name] = [], deque()
                live.append(name)
                heapq.heappush(events, (now, turn, name))
            if victim == worker:
                continue
        if not pending[worker]:
            batch = sched.next_batch(worker, available=live)
            pending[worker].extend(batch)
            result.given[worker].extend(batch)
            if not batch:
                if sched.queued:  # it waits for what others may still leave it
                    others = [t for t, _, w in events if w in live and w != worker]
                    assert others, "queued tests that no worker will ever get"
                    heapq.heappush(events, (max(others), turn, worker))
                else:  # it finishes
                    assert sched.release(worker) == []
                    live.remove(worker)
                continue
        index = pending[worker][0]
        heapq.heappush(events, (now + plan.estimates[index], turn, worker))
    result.out_of_order = sched.out_of_order
    assert sched.queued == 0
    return result


def order_breaks(plan: Plan, given: list[int]) -> int:
    """Places where a worker's tests go back in their file, or re-enter a fixture group
    the worker had left."""
    breaks = 0
    passed: dict[str, int] = {}
    left: set[int] = set()
    for position, index in enumerate(given):
        file = file_of(plan.nodeids[index])
        if passed.get(file, -1) >= index:
            breaks += 1
        passed[file] = max(passed.get(file, -1), index)
        group = plan.groups[index]
        if group in left:
            breaks += 1
        if position and plan.groups[given[position - 1]] != group:
            left.add(plan.groups[given[position - 1]])
    return breaks


def _plan(suite: Suite) -> Plan:
    return make_plan(suite.nodeids, dict(zip(suite.nodeids, suite.durations, strict=True)))


@settings(max_examples=150, deadline=None)
@given(suites(), st.integers(1, 6), st.booleans())
def test_each_worker_keeps_collection_order_and_never_reenters_a_group(
    suite: Suite, workers: int, head_start: bool
) -> None:
    plan = _plan(suite)
    result = replay(plan, suite, workers, head_start=head_start)
    assert sorted(result.ended) == list(range(len(plan.nodeids)))  # each test once
    assert result.out_of_order == 0
    for tests in result.given.values():
        assert order_breaks(plan, tests) == 0


@settings(max_examples=150, deadline=None)
@given(suites(), st.integers(1, 6), st.lists(st.integers(0, 40), max_size=3), st.booleans())
def test_lost_workers_requeue_in_order_and_every_test_ends_once(
    suite: Suite, workers: int, losses: list[int], head_start: bool
) -> None:
    plan = _plan(suite)
    losses = losses[: workers - 1] if workers > 1 else []
    result = replay(plan, suite, workers, losses=losses, head_start=head_start)
    assert sorted(result.ended) == list(range(len(plan.nodeids)))
    # A replacement has passed nothing: what the lost worker held runs in order on it or
    # on a worker that had not passed it.
    assert result.out_of_order == 0
    for tests in result.given.values():
        assert order_breaks(plan, tests) == 0


@settings(max_examples=100, deadline=None)
@given(suites(), st.integers(2, 6), st.integers(0, 20))
def test_without_a_replacement_passed_tests_still_run_once(
    suite: Suite, workers: int, loss: int
) -> None:
    # Every worker left may have passed what the lost one held: one runs it anyway (the
    # scheduler counts those), rather than leaving it unrun.
    plan = _plan(suite)
    result = replay(plan, suite, workers, losses=[loss], replace=False)
    assert sorted(result.ended) == list(range(len(plan.nodeids)))
    breaks = sum(order_breaks(plan, tests) for tests in result.given.values())
    assert breaks <= 2 * result.out_of_order


@settings(max_examples=150, deadline=None)
@given(suites(classes=False), st.integers(1, 8))
def test_files_without_groups_or_costs_keep_the_greedy_bound(suite: Suite, workers: int) -> None:
    # Chunks of collection order cost nothing here: no fixture group inside a file, and
    # nothing known about entering one. Every worker stays busy while work is queued.
    plan = _plan(suite)
    sim = simulate(plan, workers, scheduler=Scheduler(plan, workers, min_batch_seconds=0.0))
    bound = math.fsum(plan.estimates) / workers + plan.longest
    assert sim.makespan <= bound * (1 + 1e-9) + 1e-9
    for run in sim.runs:
        assert order_breaks(plan, list(run)) == 0


def test_a_class_that_clears_a_cache_runs_before_later_tests_on_every_worker() -> None:
    # The case that broke a real suite: a class clears a cache in its teardown, slower
    # tests later in the file fill it. Longest first alone sent later tests to a worker
    # before the class's; in order, no worker runs a later test before an earlier one.
    nodeids = [f"t/test_cache.py::TestClears::test_{i}" for i in range(4)]
    nodeids += [f"t/test_cache.py::test_fills_{i}" for i in range(6)]
    nodeids += [f"t/test_other.py::test_{i}" for i in range(20)]
    history = dict.fromkeys(nodeids, 0.01)
    history.update({n: 2.0 for n in nodeids if "fills" in n})
    plan = make_plan(nodeids, history)
    files = {file_of(n) for n in nodeids}
    for costs in ({}, dict.fromkeys(files, 0.0)):
        sim = simulate(plan, 2, scheduler=Scheduler(plan, 2, entry_costs=costs))
        for run in sim.runs:
            assert order_breaks(plan, list(run)) == 0
