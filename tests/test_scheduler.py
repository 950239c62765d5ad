"""The scheduler's guarantees, checked by simulation with the real planner and scheduler."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.simulate import simulate
from orchestrator.scheduling.planner import make_plan
from orchestrator.scheduling.scheduler import AHEAD_SECONDS, Scheduler

durations_st = st.lists(
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False, allow_infinity=False),
    min_size=0,
    max_size=120,
)


def _plan(durations: list[float]):
    nodeids = [f"tests/test_m{i % 7}.py::test_{i}" for i in range(len(durations))]
    return make_plan(nodeids, dict(zip(nodeids, durations, strict=True)))


@given(durations_st, st.integers(min_value=1, max_value=16))
def test_every_test_runs_exactly_once(durations: list[float], workers: int) -> None:
    sim = simulate(_plan(durations), workers)
    ran = sorted(i for run in sim.runs for i in run)
    assert ran == list(range(len(durations)))


@given(durations_st, st.integers(min_value=1, max_value=16))
def test_makespan_within_greedy_bound(durations: list[float], workers: int) -> None:
    plan = _plan(durations)
    sched = Scheduler(plan, workers, min_batch_seconds=0.0)
    sim = simulate(plan, workers, scheduler=sched)
    bound = math.fsum(durations) / workers + max(durations, default=0.0)
    assert sim.makespan <= bound * (1 + 1e-9) + 1e-9


@given(durations_st, st.integers(min_value=1, max_value=16))
def test_makespan_bound_allows_for_minimum_batch(durations: list[float], workers: int) -> None:
    plan = _plan(durations)
    sim = simulate(plan, workers)  # default minimum batch of 0.1 s
    bound = math.fsum(durations) / workers + max([*durations, 0.1])
    assert sim.makespan <= bound * (1 + 1e-9) + 1e-9


@given(durations_st, st.integers(min_value=1, max_value=8))
def test_plan_and_schedule_are_deterministic(durations: list[float], workers: int) -> None:
    assert _plan(durations) == _plan(durations)
    assert simulate(_plan(durations), workers).runs == simulate(_plan(durations), workers).runs


def test_longest_first_across_cheap_files_and_tail_batched() -> None:
    durations = [0.01] * 200 + [5.0, 4.0]  # the long tests come last in collection order
    plan = _plan(durations)
    files = {n.split("::")[0] for n in plan.nodeids}
    sched = Scheduler(plan, 2, entry_costs=dict.fromkeys(files, 0.0))
    assert sched.next_batch("a") == [200]
    assert sched.next_batch("b") == [201]
    batch = sched.next_batch("a")
    assert len(batch) > 1 and all(i < 200 for i in batch)
    for file in range(7):  # each file's tests in collection order
        assert [i for i in batch if i % 7 == file] == sorted(i for i in batch if i % 7 == file)


def test_a_file_whose_entry_cost_is_unknown_runs_in_collection_order() -> None:
    # One file: the long tests come last. Nothing says a second worker could enter the
    # file cheaply, so the first worker keeps to collection order, and the second joins
    # after it.
    nodeids = [f"t/test_one.py::test[{i}]" for i in range(12)]
    durations = [0.01] * 10 + [5.0, 4.0]
    plan = make_plan(nodeids, dict(zip(nodeids, durations, strict=True)))
    sim = simulate(plan, 2)
    for run in sim.runs:
        assert list(run) == sorted(run)
    assert sorted(i for run in sim.runs for i in run) == list(range(12))


def test_heavy_tail_efficiency() -> None:
    # 1,000 short tests and a few long ones, collected last: LPT keeps workers busy.
    durations = [0.05] * 1000 + [3.0, 2.5, 2.0, 2.0]
    sim = simulate(_plan(durations), 4, latency=0.002)
    lower = max(sum(durations) / 4, max(durations))
    assert sim.makespan / lower < 1.05
    assert sim.efficiency > 0.95


def test_lost_worker_requeues_its_queue() -> None:
    plan = _plan([1.0] * 10)
    sched = Scheduler(plan, 1, min_batch_seconds=3.0)
    batch = sched.next_batch("a")
    assert len(batch) == 3  # a minimum batch of 3 s of 1 s tests
    running, requeued = sched.worker_lost("a")
    assert running == batch[0]
    assert requeued == batch[1:]
    rest = []
    while batch := sched.next_batch("b"):
        rest += batch
    assert sorted(rest) == sorted(set(range(10)) - {running})  # requeued ones run again


def test_stop_drops_the_queue() -> None:
    plan = _plan([1.0] * 5)
    sched = Scheduler(plan, 1)
    first = sched.next_batch("a")
    dropped = sched.stop()
    assert sorted(first + dropped) == list(range(5))
    assert sched.next_batch("a") == []
    assert sched.release("a") == first


def test_finishing_an_unassigned_test_is_an_error() -> None:
    sched = Scheduler(_plan([1.0]), 1)
    with pytest.raises(ValueError, match="not assigned"):
        sched.finished("a", 0)


@settings(max_examples=50)
@given(st.lists(st.floats(min_value=0.001, max_value=10.0), min_size=1, max_size=60))
def test_remaining_seconds_counts_down_to_zero(durations: list[float]) -> None:
    plan = _plan(durations)
    sched = Scheduler(plan, 3)
    assert sched.remaining_seconds() == pytest.approx(sum(durations))
    for worker in "abc" * 100:
        for index in sched.next_batch(worker):
            sched.finished(worker, index)
    assert sched.remaining_seconds() == pytest.approx(0.0, abs=1e-6)
    assert sched.completed == len(durations)


def test_retry_prefers_another_worker_but_never_deadlocks() -> None:
    plan = _plan([1.0, 1.0, 1.0])
    sched = Scheduler(plan, 2)
    live = ["a", "b"]
    first = sched.next_batch("a", available=live)
    assert first == [0]
    sched.finished("a", 0)
    sched.retry(0, failed_on="a")
    # "a" could run it again, but "b" has not failed it: "a" gets other work.
    assert 0 not in sched.next_batch("a", available=live)
    assert sched.next_batch("b", available=live)[0] == 0
    sched.finished("b", 0)
    sched.retry(0, failed_on="b")
    # Failed on both: whoever asks first runs it.
    for worker in live:
        for index in sched.assigned(worker):
            sched.finished(worker, index)
    assert sched.next_batch("b", available=live) == [0]


@given(
    st.lists(st.booleans(), min_size=1, max_size=40),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=0, max_value=3),
)
def test_every_test_gets_one_verdict_with_retries(
    fails: list[bool], workers: int, retries: int
) -> None:
    """Failing tests are retried up to the limit; every test ends exactly once."""
    plan = _plan([1.0] * len(fails))
    sched = Scheduler(plan, workers)
    live = [f"w{i}" for i in range(workers)]
    attempts = [0] * len(fails)
    verdicts: list[int] = []
    for _ in range(10_000):
        progressed = False
        for worker in live:
            for index in sched.next_batch(worker, available=live):
                progressed = True
                attempts[index] += 1
                sched.finished(worker, index)
                if fails[index] and attempts[index] <= retries:
                    sched.retry(index, failed_on=worker)
                else:
                    verdicts.append(index)
        if not progressed:
            break
    assert sorted(verdicts) == list(range(len(fails)))
    assert all(a == (retries + 1 if f else 1) for a, f in zip(attempts, fails, strict=True))


def _fixture_heavy_plan(files: int, tests_per_file: int, seconds: float):
    nodeids = [f"tests/test_f{f}.py::test_{t}" for f in range(files) for t in range(tests_per_file)]
    return make_plan(nodeids, dict.fromkeys(nodeids, seconds))


def test_workers_stay_in_their_file_while_work_is_plentiful() -> None:
    # Eight files of 30 tests, each file with a 1 s module fixture: switching files costs.
    plan = _fixture_heavy_plan(8, 30, 0.05)
    costs = {f"tests/test_f{f}.py": 1.0 for f in range(8)}
    staying = simulate(plan, 2, setup_cost=costs)
    assert staying.setups <= 8 + 2  # each file entered about once, plus the final split
    assert staying.makespan < (8 * 30 * 0.05 + 8 * 1.0) / 2 + 1.0 + 0.5


class _BlindToSetups(Scheduler):
    """The same scheduler, never told what entering a file costs."""

    def finished(self, worker: str, index: int, setup_seconds: float | None = None) -> None:
        super().finished(worker, index)


def test_end_game_does_not_split_a_file_when_its_fixture_costs_more_than_it_saves() -> None:
    # Like benchmarks' fixture-heavy suite: eight files, each with a 1-2 s module fixture
    # and 10-30 short tests. Near the end, a worker that ran out of files would rebuild
    # another worker's fixture to run its last few tests.
    rng = random.Random(11)
    nodeids, history, costs = [], {}, {}
    for m in range(8):
        costs[f"t/test_m{m}.py"] = rng.uniform(1.0, 2.0)
        for t in range(rng.randint(10, 30)):
            nodeid = f"t/test_m{m}.py::test_{t}"
            nodeids.append(nodeid)
            history[nodeid] = rng.uniform(0.003, 0.03)
    plan = make_plan(nodeids, history)
    for workers in (2, 3):
        # A first run learns what entering each file costs as its reports arrive (too
        # late for a file another worker is still entering); the next run knows.
        first = Scheduler(plan, workers)
        simulate(plan, workers, setup_cost=costs, scheduler=first)
        learnt = first.learnt_entry_costs()
        assert learnt and all(c == pytest.approx(costs[f]) for f, c in learnt.items())
        # Without a floor on what entering costs: the blind one takes it as free.
        warm = Scheduler(plan, workers, entry_costs=learnt, min_batch_seconds=0.0)
        aware = simulate(plan, workers, setup_cost=costs, scheduler=warm)
        blind_scheduler = _BlindToSetups(plan, workers, min_batch_seconds=0.0)
        blind = simulate(plan, workers, setup_cost=costs, scheduler=blind_scheduler)
        assert aware.setups == 8  # every file entered once
        assert blind.setups > aware.setups
        assert aware.makespan < blind.makespan
        assert sorted(i for run in aware.runs for i in run) == list(range(len(nodeids)))


def test_a_file_with_enough_work_left_is_still_shared() -> None:
    # One file: 40 tests of 0.5 s behind a 1 s fixture. Splitting it pays.
    nodeids = [f"t/test_big.py::test_{i}" for i in range(40)]
    plan = make_plan(nodeids, dict.fromkeys(nodeids, 0.5))
    sim = simulate(plan, 2, setup_cost={"t/test_big.py": 1.0})
    assert all(run for run in sim.runs)
    assert sim.makespan < 0.5 * 40 / 2 + 1.0 + 2.0


def test_recorded_entry_costs_count_before_the_run_measures_its_own() -> None:
    # File a (ten 0.05 s tests) behind a 5 s fixture, file b short. The worker done with b
    # cannot have measured a's fixture (its owner is still in its first test), but the
    # previous run's figure says joining would cost more than it saves.
    nodeids = [f"t/test_a.py::test_{i}" for i in range(10)] + ["t/test_b.py::test_0"]
    plan = make_plan(nodeids, {**dict.fromkeys(nodeids[:10], 0.05), nodeids[10]: 0.01})
    costs = {"t/test_a.py": 5.0}
    recorded = Scheduler(plan, 2, max_batch_tests=1, entry_costs=costs)
    assert simulate(plan, 2, setup_cost=costs, scheduler=recorded).setups == 2
    unknown = Scheduler(plan, 2, max_batch_tests=1)
    assert simulate(plan, 2, setup_cost=costs, scheduler=unknown).setups == 3


def test_entry_cost_is_learnt_from_entering_setups_after_a_workers_first_test() -> None:
    nodeids = [f"t/test_{m}.py::test_{i}" for m in "ab" for i in range(3)]
    sched = Scheduler(make_plan(nodeids, {}), 1, max_batch_tests=1)
    # The worker's first setup also built the session's fixtures: file a's cost is not
    # known from it. Entering b, the module fixture costs 1 s more than b's other setups.
    setups = {"a": [3.0, 0.01, 0.02], "b": [1.0, 0.03, 0.02]}
    for _ in range(6):
        (index,) = sched.next_batch("w")
        file = nodeids[index].split("::")[0][-4]
        sched.finished("w", index, setups[file].pop(0))
    assert sched.entry_cost("t/test_b.py") == pytest.approx(1.0 - 0.02)
    assert sched.learnt_entry_costs() == {"t/test_b.py": pytest.approx(0.98)}
    assert sched.entry_cost("t/test_a.py") == 0.0  # unknown
    assert sched.entry_cost("t/test_unknown.py") == 0.0


def test_known_cheap_files_go_longest_first_across_files() -> None:
    # Like the benchmarks' heavy-tailed suite: the long tests share one file, recorded as
    # cheap to enter. Staying in that file would leave them all to one worker (14.2 s of
    # 25 s); longest first across files splits them.
    longs = [2.91, 2.74, 2.45, 2.31, 2.13, 1.65]
    nodeids = [f"t/test_long.py::test[{i}]" for i in range(len(longs))]
    nodeids += [f"t/test_short_{m}.py::test[{i}]" for m in range(8) for i in range(125)]
    history = dict(zip(nodeids, longs + [0.0086] * 1000, strict=True))
    files = {n.split("::")[0] for n in nodeids}
    plan = make_plan(nodeids, history)
    cheap = Scheduler(plan, 2, entry_costs=dict.fromkeys(files, 0.0002))
    sim = simulate(plan, 2, scheduler=cheap)
    assert sim.makespan <= plan.total / 2 + 0.05  # one short batch of imbalance at most
    longs_per_worker = [sum(1 for i in run if "long" in nodeids[i]) for run in sim.runs]
    assert longs_per_worker == [3, 3]
    # A costly file keeps its affinity: one worker takes it, and another joins it only
    # in the end game, when that pays.
    costly = {f: 0.5 if "long" in f else 0.0002 for f in files}
    sim = simulate(plan, 2, setup_cost=costly, scheduler=Scheduler(plan, 2, entry_costs=costly))
    first_two = [run[0] for run in sim.runs]
    assert sum(1 for i in first_two if "long" in nodeids[i]) == 1
    assert sorted(sum(1 for i in run if "long" in nodeids[i]) for run in sim.runs) in (
        [0, 6],
        [1, 5],
    )


@given(durations_st, st.integers(min_value=1, max_value=16))
def test_staying_in_a_file_keeps_the_greedy_bound(durations: list[float], workers: int) -> None:
    plan = _plan(durations)  # seven files, tests interleaved across them
    sched = Scheduler(plan, workers, min_batch_seconds=0.0)
    sim = simulate(plan, workers, scheduler=sched)
    bound = math.fsum(durations) / workers + max(durations, default=0.0)
    assert sim.makespan <= bound * (1 + 1e-9) + 1e-9
    ran = sorted(i for run in sim.runs for i in run)
    assert ran == list(range(len(durations)))


def test_hundreds_of_workers_stay_busy_on_a_heavy_tailed_suite() -> None:
    # Efficiency >= 0.95 with 400 workers (simulated time, a 2 ms round trip per dispatch)
    # on a log-normal suite whose longest test is shorter than one worker's share
    # (python -m benchmarks.scale runs the same with more tests and workers).
    from benchmarks.scale import suite

    nodeids, history = suite(24_000)
    plan = make_plan(nodeids, {n: min(v, 2.0) for n, v in history.items()})
    assert plan.longest < plan.total / 400
    # Nothing known about entering the files: about eight workers share each, and one
    # passes tests to reach a long one only where another worker in the file can run
    # them in order.
    result = simulate(plan, 400, latency=0.002)
    assert result.efficiency >= 0.95
    assert sorted(i for run in result.runs for i in run) == list(range(len(nodeids)))


def test_a_worker_asks_ahead_with_about_a_tenth_of_a_second_left() -> None:
    plan = _plan([0.05] * 10 + [5.0, 0.3])
    sched = Scheduler(plan, 2)
    # Two tests of 0.05 s are 0.1 s: ask as the second-last starts (one left after it).
    assert sched.ask_at(list(range(10))) == 1
    assert sched.ask_at([10]) == 0  # a long test alone: ask as it starts
    assert sched.ask_at([10, 0]) == 0  # as the short one starts, not the long one
    assert sched.ask_at([]) == 0


def test_an_early_request_is_granted_only_while_nobody_could_run_dry() -> None:
    durations = [1.0, 1.0, 0.05, 0.05, 0.05, 0.05]
    plan = _plan(durations)
    sched = Scheduler(plan, 2, max_batch_tests=1)
    assert sched.next_batch("a") == [0]
    assert sched.next_batch("b") == [1]
    # "a" holds 1 s; the queue (0.2 s) could not keep "b" busy for that long.
    assert sched.next_batch("a", ahead=True) == []
    sched.finished("a", 0)
    assert sched.next_batch("a") == [2]
    # Holding 0.05 s is fine: at most a tenth of a second stays unstarted.
    assert sched.next_batch("a", ahead=True) == [3]
    # With plenty queued, a long test may have its successor waiting behind it.
    long_queue = _plan([1.0] * 20)
    sched = Scheduler(long_queue, 2)
    assert sched.next_batch("a") == [0]
    assert len(sched.next_batch("a", ahead=True)) == 1


@given(durations_st, st.integers(min_value=1, max_value=16), st.sampled_from([0.0, 0.002, 0.05]))
def test_asking_ahead_runs_everything_once_within_the_bound(
    durations: list[float], workers: int, latency: float
) -> None:
    plan = _plan(durations)
    sim = simulate(plan, workers, latency=latency, ahead=True)
    assert sorted(i for run in sim.runs for i in run) == list(range(len(durations)))
    # A worker may hold up to AHEAD_SECONDS it has not started while another runs dry.
    slack = max([*durations, 0.1]) + AHEAD_SECONDS + latency
    assert sim.makespan <= math.fsum(durations) / workers + slack + 1e-9


def test_asking_ahead_hides_the_round_trip() -> None:
    # 20,000 tests of a millisecond on two workers, 5 ms for an answer to arrive.
    plan = _plan([0.001] * 20_000)
    waiting = simulate(plan, 2, latency=0.005)
    ahead = simulate(plan, 2, latency=0.005, ahead=True)
    assert ahead.makespan < waiting.makespan
    assert ahead.makespan <= plan.total / 2 + 0.005 + AHEAD_SECONDS
    assert ahead.efficiency > 0.99


def test_a_replacement_that_is_late_does_not_keep_the_others_waiting() -> None:
    """Tests a lost worker held lie before where the other worker is in their file: they
    wait for the replacement, which runs them in collection order, while it is expected;
    once the controller says it is late (Ray has not placed it), the worker there takes them."""
    nodeids = [f"tests/test_x.py::test_{i}" for i in range(12)]
    plan = make_plan(nodeids, dict.fromkeys(nodeids, 1.0))
    sched = Scheduler(plan, 2, min_batch_seconds=3.0)
    first = sched.next_batch("a")
    ran = list(sched.next_batch("b"))
    running, requeued = sched.worker_lost("a")
    assert running == first[0] and requeued
    sched.add_worker()  # its replacement, not placed yet
    for index in ran:
        sched.finished("b", index)
    while batch := sched.next_batch("b"):  # everything after where b is
        ran += batch
        for index in batch:
            sched.finished("b", index)
    assert set(requeued) <= set(range(12)) - set(ran)  # left for the replacement
    sched.late = 1
    stranded = sched.next_batch("b")
    assert stranded and set(stranded) <= set(requeued)
