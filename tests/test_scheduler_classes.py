"""Resource classes in the scheduler: a worker only gets tests its shape can run."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.scheduling.planner import Plan, make_plan
from orchestrator.scheduling.scheduler import Scheduler

CPU, GPU = 0, 1


def _plan(durations: list[float], classes: list[int]) -> Plan:
    nodeids = [f"tests/test_m{i % 5}.py::test_{i}" for i in range(len(durations))]
    return make_plan(nodeids, dict(zip(nodeids, durations, strict=True)), classes)


def _drain(sched: Scheduler, worker: str) -> list[int]:
    """Everything ``worker`` gets when it asks until it gets nothing, each test finished."""
    ran: list[int] = []
    while batch := sched.next_batch(worker):
        for index in batch:
            sched.finished(worker, index)
        ran.extend(batch)
    return ran


# -- plans with classes -----------------------------------------------------------------


def test_plan_keeps_one_class_per_test() -> None:
    plan = _plan([1.0, 2.0, 3.0], [CPU, GPU, CPU])
    assert [plan.class_of(i) for i in range(3)] == [CPU, GPU, CPU]


def test_plan_without_classes_puts_every_test_in_class_zero() -> None:
    plan = _plan([1.0, 2.0], [])
    assert plan.classes == ()
    assert [plan.class_of(i) for i in range(2)] == [0, 0]


def test_plan_needs_one_class_per_test() -> None:
    with pytest.raises(ValueError, match="one resource class per test"):
        _plan([1.0, 2.0, 3.0], [CPU, GPU])


# -- dispatch ---------------------------------------------------------------------------


def test_unknown_worker_serves_class_zero_only() -> None:
    sched = Scheduler(_plan([1.0] * 4, [CPU, GPU, CPU, GPU]), 1)
    assert sched.serves("anyone") == (0,)
    assert sorted(_drain(sched, "anyone")) == [0, 2]
    assert sched.queued == 2


def test_cpu_worker_never_gets_a_gpu_test() -> None:
    classes = [GPU, CPU, GPU, CPU, CPU, GPU]
    sched = Scheduler(_plan([5.0, 1.0, 4.0, 1.0, 1.0, 3.0], classes), 2)
    sched.set_serves("cpu", [CPU])
    ran = _drain(sched, "cpu")
    assert sorted(ran) == [1, 3, 4]
    assert sched.queued == 3  # the GPU tests wait for a GPU worker
    assert sched.next_batch("cpu") == []


def test_gpu_worker_takes_gpu_tests_first_then_helps_with_cpu_tests() -> None:
    classes = [CPU] * 6 + [GPU] * 3
    sched = Scheduler(_plan([1.0] * 9, classes), 2, min_batch_seconds=0.0)
    sched.set_serves("gpu", [GPU, CPU])
    sched.set_serves("cpu", [CPU])
    assert sched.serves("gpu") == (GPU, CPU)
    gpu_ran: list[int] = []
    cpu_ran: list[int] = []
    while True:
        got_gpu = sched.next_batch("gpu")
        got_cpu = sched.next_batch("cpu")
        for worker, batch, ran in (("gpu", got_gpu, gpu_ran), ("cpu", got_cpu, cpu_ran)):
            for index in batch:
                sched.finished(worker, index)
            ran.extend(batch)
        if not got_gpu and not got_cpu:
            break
    assert gpu_ran[:3] == [6, 7, 8]  # its own class first, longest first
    assert len(gpu_ran) > 3  # then it helps with the CPU queue
    assert all(classes[i] == CPU for i in cpu_ran)
    assert sorted(gpu_ran + cpu_ran) == list(range(9))


def test_gpu_tests_wait_for_the_gpu_worker_while_cpu_workers_run() -> None:
    classes = [GPU, CPU, CPU]
    sched = Scheduler(_plan([9.0, 1.0, 1.0], classes), 2, min_batch_seconds=0.0)
    sched.set_serves("cpu", [CPU])
    assert sched.next_batch("cpu") == [1]
    sched.set_serves("gpu", [GPU, CPU])
    assert sched.next_batch("gpu") == [0]
    assert sched.next_batch("cpu") == [2]


def test_batches_never_mix_classes() -> None:
    classes = [CPU, GPU] * 20
    sched = Scheduler(_plan([0.01] * 40, classes), 1, min_batch_seconds=10.0)
    sched.set_serves("gpu", [GPU, CPU])
    first = sched.next_batch("gpu")
    second = sched.next_batch("gpu")
    assert sorted(first) == [i for i in range(40) if classes[i] == GPU]
    assert sorted(second) == [i for i in range(40) if classes[i] == CPU]
    assert sched.next_batch("gpu") == []


# -- has_work_for -----------------------------------------------------------------------


def test_has_work_for_is_false_once_the_workers_classes_are_drained() -> None:
    classes = [CPU, CPU, GPU, GPU]
    sched = Scheduler(_plan([1.0] * 4, classes), 2)
    sched.set_serves("cpu", [CPU])
    sched.set_serves("gpu", [GPU, CPU])
    assert sched.has_work_for("cpu", running_counts=False)
    _drain(sched, "cpu")
    assert not sched.has_work_for("cpu", running_counts=False)
    assert not sched.has_work_for("cpu", running_counts=True)
    assert sched.has_work_for("gpu", running_counts=False)
    assert sched.queued == 2


def test_has_work_for_counts_running_tests_of_its_classes_only() -> None:
    classes = [CPU, GPU]
    sched = Scheduler(_plan([2.0, 1.0], classes), 2)
    sched.set_serves("cpu", [CPU])
    sched.set_serves("gpu", [GPU])
    sched.set_serves("other-cpu", [CPU])
    assert sched.next_batch("cpu") == [0]
    assert sched.next_batch("gpu") == [1]
    # A running CPU test may fail and come back, so another CPU worker may still get it.
    assert not sched.has_work_for("other-cpu", running_counts=False)
    assert sched.has_work_for("other-cpu", running_counts=True)
    sched.finished("cpu", 0)
    # The GPU test still running is of no concern to a CPU worker.
    assert not sched.has_work_for("other-cpu", running_counts=True)
    assert sched.has_work_for("gpu", running_counts=True)
    assert not sched.has_work_for("gpu", running_counts=False)


def test_has_work_for_sees_retries_of_its_classes() -> None:
    sched = Scheduler(_plan([1.0, 1.0], [GPU, CPU]), 2)
    sched.set_serves("gpu", [GPU])
    sched.set_serves("cpu", [CPU])
    assert sched.next_batch("gpu") == [0]
    assert sched.next_batch("cpu") == [1]
    sched.finished("gpu", 0)
    sched.finished("cpu", 1)
    sched.retry(0, failed_on="gpu")
    assert sched.has_work_for("gpu", running_counts=False)
    assert not sched.has_work_for("cpu", running_counts=False)


# -- retries and lost workers -------------------------------------------------------------


def test_retry_of_a_gpu_test_goes_only_to_gpu_workers() -> None:
    classes = [GPU, CPU, CPU, CPU]
    sched = Scheduler(_plan([5.0, 1.0, 1.0, 1.0], classes), 3, min_batch_seconds=0.0)
    sched.set_serves("g1", [GPU, CPU])
    sched.set_serves("g2", [GPU, CPU])
    sched.set_serves("c", [CPU])
    live = ["g1", "g2", "c"]
    assert sched.next_batch("g1", available=live) == [0]
    sched.finished("g1", 0)
    sched.retry(0, failed_on="g1")
    for _ in range(3):
        batch = sched.next_batch("c", available=live)
        assert 0 not in batch
        for index in batch:
            sched.finished("c", index)
    assert sched.next_batch("c", available=live) == []
    # g1 failed it and g2 has not: g2 gets the retry, not g1.
    assert sched.next_batch("g1", available=live) == []
    assert sched.next_batch("g2", available=live) == [0]


def test_retry_does_not_wait_for_a_worker_that_cannot_run_it() -> None:
    sched = Scheduler(_plan([5.0, 1.0], [GPU, CPU]), 2)
    sched.set_serves("gpu", [GPU, CPU])
    sched.set_serves("cpu", [CPU])
    live = ["gpu", "cpu"]
    assert sched.next_batch("gpu", available=live) == [0]
    sched.finished("gpu", 0)
    sched.retry(0, failed_on="gpu")
    # The only other live worker has no GPU, so the retry runs where it failed.
    assert sched.next_batch("gpu", available=live) == [0]


def test_lost_gpu_worker_requeues_into_the_gpu_queue() -> None:
    classes = [GPU] * 4 + [CPU] * 2
    sched = Scheduler(_plan([1.0] * 6, classes), 3, min_batch_seconds=10.0)
    sched.set_serves("g1", [GPU])
    batch = sched.next_batch("g1")
    assert sorted(batch) == [0, 1, 2, 3]
    running, requeued = sched.worker_lost("g1")
    assert running == batch[0]
    assert requeued == batch[1:]
    sched.set_serves("cpu", [CPU])
    assert sorted(_drain(sched, "cpu")) == [4, 5]
    sched.set_serves("g2", [GPU])
    assert sched.next_batch("g2") == requeued


# -- properties -------------------------------------------------------------------------


@st.composite
def classed_runs(draw: st.DrawFn) -> tuple[list[float], list[int], list[list[int]]]:
    """Durations and a class per test, and each worker's classes in its preference order;
    every class is served by at least one worker."""
    n_classes = draw(st.integers(min_value=1, max_value=4))
    n_tests = draw(st.integers(min_value=0, max_value=60))
    durations = draw(
        st.lists(
            st.floats(min_value=0.0, max_value=20.0, allow_nan=False),
            min_size=n_tests,
            max_size=n_tests,
        )
    )
    classes = draw(
        st.lists(
            st.integers(min_value=0, max_value=n_classes - 1), min_size=n_tests, max_size=n_tests
        )
    )
    n_workers = draw(st.integers(min_value=1, max_value=6))
    serves: list[list[int]] = []
    for _ in range(n_workers):
        order = draw(st.permutations(range(n_classes)))
        serves.append(list(order[: draw(st.integers(min_value=1, max_value=n_classes))]))
    for cls in range(n_classes):
        if not any(cls in s for s in serves):
            serves[draw(st.integers(0, n_workers - 1))].append(cls)
    return durations, classes, serves


@settings(max_examples=80, deadline=None)
@given(classed_runs())
def test_every_test_dispatched_once_to_a_worker_serving_its_class(
    run: tuple[list[float], list[int], list[list[int]]],
) -> None:
    durations, classes, serves = run
    plan = _plan(durations, classes)
    sched = Scheduler(plan, len(serves))
    names = [f"w{i}" for i in range(len(serves))]
    for name, own in zip(names, serves, strict=True):
        sched.set_serves(name, own)
    dispatched: list[int] = []

    def left_to(worker: int, cls: int) -> list[int]:
        """Tests of class ``cls`` not dispatched yet that ``worker`` may still run."""
        done = set(dispatched)
        return [
            i
            for i in range(len(durations))
            if classes[i] == cls and i not in done and not sched.passed(names[worker], i)
        ]

    # Workers by (when they ask, in which turn, which): one that waits asks after the
    # others that are due at the same time.
    ready = [(0.0, w, w) for w in range(len(names))]
    turn = len(names)
    while ready:
        now, _, w = heapq.heappop(ready)
        batch = sched.next_batch(names[w])
        turn += 1
        if not batch:
            # Nothing left for it: every class it serves is drained, but for tests it
            # passed in collection order; another worker runs those.
            assert all(not left_to(w, c) for c in serves[w])
            if sched.queued:
                assert ready, "tests are queued that no worker can run"
                heapq.heappush(ready, (max(ready)[0], turn, w))  # it waits: asks again
            continue
        batch_classes = {classes[i] for i in batch}
        assert len(batch_classes) == 1
        (cls,) = batch_classes
        assert cls in serves[w]
        # It prefers its classes in order: nothing it may run is left of the ones before.
        for earlier in serves[w][: serves[w].index(cls)]:
            assert not left_to(w, earlier)
        dispatched.extend(batch)
        for index in batch:
            sched.finished(names[w], index)
        heapq.heappush(ready, (now + sum(durations[i] for i in batch), turn, w))
    assert sorted(dispatched) == list(range(len(durations)))
    assert sched.queued == 0
    assert sched.completed == len(durations)
    assert not sched.running


@settings(max_examples=60, deadline=None)
@given(classed_runs(), st.data())
def test_retries_respect_classes_and_every_test_gets_one_verdict(
    run: tuple[list[float], list[int], list[list[int]]], data: st.DataObject
) -> None:
    durations, classes, serves = run
    fails = data.draw(st.lists(st.booleans(), min_size=len(durations), max_size=len(durations)))
    retries = data.draw(st.integers(min_value=0, max_value=2))
    sched = Scheduler(_plan(durations, classes), len(serves))
    live = [f"w{i}" for i in range(len(serves))]
    for name, own in zip(live, serves, strict=True):
        sched.set_serves(name, own)
    attempts = [0] * len(durations)
    verdicts: list[int] = []
    for _ in range(10_000):
        progressed = False
        for w, worker in enumerate(live):
            for index in sched.next_batch(worker, available=live):
                assert classes[index] in serves[w]
                progressed = True
                attempts[index] += 1
                sched.finished(worker, index)
                if fails[index] and attempts[index] <= retries:
                    sched.retry(index, failed_on=worker)
                else:
                    verdicts.append(index)
        if not progressed:
            break
    assert sorted(verdicts) == list(range(len(durations)))
    assert all(a == (retries + 1 if f else 1) for a, f in zip(attempts, fails, strict=True))
    assert not any(sched.has_work_for(w, running_counts=True) for w in live)
