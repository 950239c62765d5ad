"""The head start: planning it from a recorded collection, keeping it, and a worker's side."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.run.numbering import Numbering
from orchestrator.run.protocol import Message, decode
from orchestrator.scheduling import head_start
from orchestrator.scheduling.head_start import (
    LastCollection,
    collection_key,
    match,
    plan_head_start,
    stamps,
    unchanged,
)
from orchestrator.scheduling.planner import make_plan
from orchestrator.scheduling.scheduler import Scheduler
from orchestrator.store.durations import COLLECTIONS_KEPT, CollectionStore
from orchestrator.worker.process import WorkerProcess
from tests.suites import OUTCOMES, RECORDER, junit_cases


def _collection(durations: dict[str, float], seconds: float = 1.0, **kw: object) -> LastCollection:
    return LastCollection(nodeids=tuple(durations), files={}, seconds=seconds, **kw)  # type: ignore[arg-type]


def _suite(count: int, long: int = 2) -> dict[str, float]:
    """``count`` short tests in four files, and ``long`` long ones collected last."""
    durations = {f"test_{i % 4}.py::test_short[{i}]": 0.01 for i in range(count)}
    durations.update({f"test_long.py::test_long[{i}]": 3.0 + i for i in range(long)})
    return durations


def _guessed_by_worker(start: head_start.HeadStart) -> list[list[str]]:
    return [[start.nodeids[i] for i in start.given(w)] for w in range(len(start.batches))]


def test_the_longest_tests_start_first_and_each_worker_gets_its_budget() -> None:
    durations = _suite(400)
    start = plan_head_start(_collection(durations, seconds=0.4), durations, 2)
    assert start is not None
    per_worker = _guessed_by_worker(start)
    # As the scheduler hands them out: the file with the most work first, in collection
    # order (the second worker keeps out of the file the first one is in: nothing says
    # entering it is cheap).
    assert per_worker[0][0] == "test_long.py::test_long[0]"
    budget = 0.4 * head_start.BUDGET_FACTOR + head_start.MARGIN_SECONDS
    for tests in per_worker:
        assert sum(durations[t] for t in tests) >= budget
    # Not the whole suite: the rest waits for the controller's own plan.
    assert len(start.nodeids) < len(durations)


def test_held_back_tests_are_never_guessed() -> None:
    durations = _suite(50)
    held = frozenset({"test_long.py::test_long[1]", "test_0.py::test_short[0]"})
    start = plan_head_start(_collection(durations, seconds=100, held_back=held), durations, 2)
    assert start is not None
    assert not held & set(start.nodeids)
    assert len(start.nodeids) == len(durations) - len(held)


def test_nothing_to_start_gives_no_head_start() -> None:
    assert plan_head_start(_collection({}), {}, 2) is None
    only = {"test_a.py::test_gpu": 1.0}
    held = frozenset(only)
    assert plan_head_start(_collection(only, held_back=held), only, 2) is None


def test_guesses_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(head_start, "MAX_GUESSED", 30)
    durations = _suite(1000, long=0)
    start = plan_head_start(_collection(durations, seconds=1000), durations, 3)
    assert start is not None and len(start.nodeids) == 30


@settings(max_examples=60, deadline=None)
@given(
    seconds=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=60),
    workers=st.integers(1, 5),
    collect=st.floats(0.0, 3.0),
    held=st.sets(st.integers(0, 59), max_size=10),
)
def test_head_start_invariants(
    seconds: list[float], workers: int, collect: float, held: set[int]
) -> None:
    """Every guessed test goes to exactly one worker, once; held-back tests never do;
    the numbering covers exactly the guessed tests."""
    durations = {f"test_{i % 3}.py::t[{i}]": s for i, s in enumerate(seconds)}
    names = list(durations)
    held_back = frozenset(names[i] for i in held if i < len(names))
    start = plan_head_start(
        _collection(durations, seconds=collect, held_back=held_back), durations, workers
    )
    if start is None:
        assert set(names) <= held_back
        return
    assert len(start.batches) == workers == len(start.ask_at)
    numbers = [i for w in range(workers) for i in start.given(w)]
    assert sorted(numbers) == list(range(len(start.nodeids)))
    assert not held_back & set(start.nodeids)
    assert set(start.nodeids) <= set(names)
    for batches, asks in zip(start.batches, start.ask_at, strict=True):
        assert len(batches) == len(asks) and all(batches)


def test_match_finds_guesses_in_the_real_collection() -> None:
    assert match(["a", "b", "c"], ["c", "x", "a"]) == [2, None, 0]


def test_collection_round_trips_through_json() -> None:
    collection = LastCollection(
        nodeids=("t.py::a", "t.py::b"),
        files={"t.py": (123, 4), "gone.py": None},
        seconds=0.5,
        held_back=frozenset({"t.py::b"}),
    )
    assert LastCollection.from_json(collection.to_json()) == collection


def test_only_selecting_options_make_runs_differ() -> None:
    base = {"keyword": "", "markexpr": "", "verbose": 0, "xmlpath": "a.xml", "ray_workers": "2"}
    key = collection_key(base, ["tests"], "/p", "/p")
    louder = {**base, "verbose": 2, "xmlpath": "b.xml", "ray_workers": "auto"}
    assert collection_key(louder, ["tests"], "/p", "/p") == key
    assert collection_key({**base, "keyword": "slow"}, ["tests"], "/p", "/p") != key
    assert collection_key(base, ["tests/unit"], "/p", "/p") != key
    assert collection_key(base, ["tests"], "/q", "/p") != key


def test_a_changed_or_removed_file_invalidates_the_record(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text("def test_a(): pass\n")
    (tmp_path / "conftest.py").write_text("")
    files = stamps(tmp_path, ["test_a.py", str(tmp_path / "conftest.py")])
    collection = LastCollection(nodeids=("test_a.py::test_a",), files=files, seconds=0.1)
    assert unchanged(collection, tmp_path)
    (tmp_path / "test_a.py").write_text("def test_a(): pass\ndef test_b(): pass\n")
    assert not unchanged(collection, tmp_path)
    collection = LastCollection(
        nodeids=collection.nodeids, files=stamps(tmp_path, files), seconds=0.1
    )
    assert unchanged(collection, tmp_path)
    (tmp_path / "conftest.py").unlink()
    assert not unchanged(collection, tmp_path)


def test_store_keeps_the_newest_collections(tmp_path: Path) -> None:
    store = CollectionStore(tmp_path / "durations.db")
    assert store.load("nothing") is None
    for n in range(COLLECTIONS_KEPT + 3):
        store.save(f"key{n}", _collection({f"t.py::t{n}": 1.0}))
    assert store.load("key0") is None  # pruned: the oldest went first
    last = store.load(f"key{COLLECTIONS_KEPT + 2}")
    assert last is not None and last.nodeids == (f"t.py::t{COLLECTIONS_KEPT + 2}",)
    store.save("key1", _collection({"t.py::again": 1.0}))  # a run with the same key replaces
    again = store.load("key1")
    assert again is not None and again.nodeids == ("t.py::again",)


def test_a_record_written_differently_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "durations.db"
    CollectionStore(path).save("k", _collection({"t.py::t": 1.0}))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE collections SET data = '{\"nodeids\": 3}'")
    conn.commit()
    conn.close()
    assert CollectionStore(path).load("k") is None


def test_the_scheduler_takes_over_what_was_given() -> None:
    durations = {f"t.py::t{i}": float(i) for i in range(6)}
    plan = make_plan(list(durations), durations)
    scheduler = Scheduler(plan, 2)
    assert scheduler.give("w0", [5, 3]) == [5, 3]
    assert scheduler.give("w1", [5, 4]) == [4]  # 5 is not queued any more
    assert scheduler.assigned("w0") == (5, 3)
    handed = [i for _ in range(6) for i in scheduler.next_batch("w1")]
    assert set(handed) == {0, 1, 2}
    scheduler.finished("w0", 5)
    running, requeued = scheduler.worker_lost("w0")
    assert (running, requeued) == (3, [])
    scheduler.finished("w1", 4)
    assert scheduler.completed == 3


def test_numbering_maps_a_workers_numbers_to_the_plans_and_back() -> None:
    numbering = Numbering()
    assert not numbering and numbering.index("gw0", 4) == 4
    numbering.take_over("gw0", 3, {0: 1, 2: 0})  # guess 1 is not in the plan
    numbering.take_over("gw1", 3, {})  # it runs none of its guesses for the plan
    assert numbering
    assert [numbering.index("gw0", n) for n in range(5)] == [1, None, 0, 0, 1]
    assert [numbering.index("gw1", n) for n in (0, 3)] == [None, 0]
    assert numbering.numbers("gw0", [2, 5]) == [5, 8]
    assert numbering.numbers("gw2", [2, 5]) == [2, 5]  # started after the plan existed
    assert numbering.guessed("gw0") == {0: 1, 2: 0} and numbering.guessed("gw1") == {}


# -- a worker with a head start, driven directly ------------------------------------------
SUITE = """
import pytest

@pytest.mark.parametrize("n", [1, 2])
def test_kept(n):
    pass

def test_other():
    pass
"""


def _exchange(proc: WorkerProcess, script: list[list[Message]]) -> list[Message]:
    """Events of a worker until it exits; each request for work gets the next commands."""
    events: list[Message] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for raw in proc.events(0.2):
            event = raw if isinstance(raw, dict) else decode(raw)
            events.append(event)
            if event["t"] == "need" and not event.get("ahead"):
                proc.send(script.pop(0) if script else [{"t": "finish"}])
            if event["t"] == "exit":
                return events
    raise AssertionError("the worker did not finish in time")


def _ran(events: list[Message]) -> list[int]:
    return [e["i"] for e in events if e["t"] == "pass"]


def test_a_worker_runs_guesses_then_the_controllers_tests(tmp_path: Path) -> None:
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "test_later.py").write_text("def test_later():\n    pass\n")
    guesses = [
        "test_suite.py::test_kept[2]",
        "test_suite.py::test_removed",  # in the record, not in the file any more
        "test_gone.py::test_x",  # a file that is not there any more
        "test_suite.py::test_kept[1]",
        "test_later.py::test_later",  # guessed for another worker: not collected here yet
    ]
    init = {
        "t": "init",
        "worker": "gw0",
        "args": ["-p", "no:cacheprovider"],
        "nodeids": guesses,
        "guessed": len(guesses),
    }
    proc = WorkerProcess(init, cwd=str(tmp_path), env=dict(os.environ))
    proc.send([{"t": "run", "i": [0, 1, 2, 3]}])
    plan = [
        "test_suite.py::test_kept[1]",
        "test_suite.py::test_kept[2]",
        "test_suite.py::test_other",
        "test_later.py::test_later",
    ]
    more: Message = {"t": "more", "nodeids": plan, "workerinput": {}}
    # The controller's tests are numbered after the five guesses: test_other is 5 + 2, and
    # test_later (5 + 3) is the fifth guess too, its file collected only now.
    script = [[more, {"t": "run", "i": [7, 8]}]]
    try:
        events = _exchange(proc, script)
    finally:
        proc.close()
    kinds = [e["t"] for e in events]
    assert "missing" not in kinds and events[-1]["code"] == 0, events[-3:]
    gone = sorted(i for e in events if e["t"] == "gone" for i in e["i"])
    assert gone == [1, 2]
    assert _ran(events) == [0, 3, 7, 8]


def test_a_worker_stops_on_a_missing_test_of_the_controllers(tmp_path: Path) -> None:
    (tmp_path / "test_suite.py").write_text(SUITE)
    init = {
        "t": "init",
        "worker": "gw0",
        "args": ["-p", "no:cacheprovider"],
        "nodeids": ["test_suite.py::test_other"],
        "guessed": 1,
    }
    proc = WorkerProcess(init, cwd=str(tmp_path), env=dict(os.environ))
    proc.send([{"t": "run", "i": [0]}])
    more: Message = {"t": "more", "nodeids": ["test_suite.py::test_new"], "workerinput": {}}
    try:
        events = _exchange(proc, [[more, {"t": "run", "i": [1]}]])
    finally:
        proc.close()
    missing = [e for e in events if e["t"] == "missing"]
    assert missing and missing[0]["missing"] == ["test_suite.py::test_new"]
    assert _ran(events) == [0]


# -- end to end, on the session's cluster -------------------------------------------------
HEAD_START_LINE = "orchestrator: head start: * tests of the last run's collection started*"


def _run_twice_suite(pytester: pytest.Pytester) -> None:
    files = dict(OUTCOMES)
    files["test_many.py"] = (
        "import pytest\n\n"
        "@pytest.mark.parametrize('n', range(40))\n"
        "def test_a(n):\n    pass\n\n"
        "@pytest.mark.parametrize('n', range(40))\n"
        "def test_b(n):\n    pass\n"
    )
    files["conftest.py"] = (
        "import os\n\n"
        "def pytest_collection_modifyitems(config, items):\n"
        "    # Options changed while collecting (scikit-learn's conftest does) do not\n"
        "    # change which recorded collection the next run finds.\n"
        "    config.option.seen_items = len(items)\n"
        "    # Selection that no file records: an environment variable.\n"
        "    if os.environ.get('ONLY_A'):\n"
        "        kept = [i for i in items if 'test_b' not in i.nodeid]\n"
        "        config.hook.pytest_deselected(items=[i for i in items if i not in kept])\n"
        "        items[:] = kept\n" + RECORDER
    )
    for name, text in files.items():
        (pytester.path / name).write_text(text, encoding="utf-8")


def _ray_run(
    pytester: pytest.Pytester, tag: str, *args: str
) -> tuple[pytest.RunResult, list[object], dict[tuple[str, str], str]]:
    outcomes = pytester.path / f"outcomes-{tag}.jsonl"
    junit = pytester.path / f"junit-{tag}.xml"
    os.environ["OUTCOMES_FILE"] = str(outcomes)
    try:
        result = pytester.runpytest_subprocess(
            "--ray", "--ray-workers", "2", f"--junitxml={junit}", *args, timeout=240
        )
    finally:
        del os.environ["OUTCOMES_FILE"]
    lines = outcomes.read_text(encoding="utf-8").splitlines() if outcomes.exists() else []
    return result, sorted(json.loads(line) for line in lines), junit_cases(junit)


@pytest.mark.ray_cluster
def test_a_rerun_starts_while_collecting_with_the_same_results(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    _run_twice_suite(pytester)
    first, first_outcomes, first_cases = _ray_run(pytester, "first")
    assert first.ret == pytest.ExitCode.TESTS_FAILED
    assert "head start" not in first.stdout.str()
    # Output options (-v, another report path) do not make it another selection.
    second, second_outcomes, second_cases = _ray_run(pytester, "second", "-v")
    second.stdout.fnmatch_lines([HEAD_START_LINE])
    assert "not collected this time" not in second.stdout.str()
    assert second.ret == first.ret
    assert second_outcomes == first_outcomes
    assert second_cases == first_cases and len(first_cases) == 80 + 18
    # --ray-head-start off waits for the collection.
    off, off_outcomes, _ = _ray_run(pytester, "off", "--ray-head-start", "off")
    assert "head start" not in off.stdout.str() and off_outcomes == first_outcomes


@pytest.mark.ray_cluster
def test_guesses_the_run_does_not_collect_are_dropped(
    pytester: pytest.Pytester, on_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run_twice_suite(pytester)
    _, first_outcomes, first_cases = _ray_run(pytester, "first")
    monkeypatch.setenv("ONLY_A", "1")
    narrow, narrow_outcomes, narrow_cases = _ray_run(pytester, "narrow")
    narrow.stdout.fnmatch_lines([HEAD_START_LINE + "; * not collected this time"])
    # The test_b tests ran early on a worker, but this run deselected them: no trace.
    assert narrow_cases == {k: v for k, v in first_cases.items() if "test_b" not in k[1]}
    assert narrow_outcomes == [o for o in first_outcomes if "test_b" not in o[0]]  # type: ignore[index]
    narrow.stdout.fnmatch_lines(["*40 deselected*"])


@pytest.mark.ray_cluster
def test_a_changed_test_file_gives_no_head_start(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    _run_twice_suite(pytester)
    _ray_run(pytester, "first")
    path = pytester.path / "test_many.py"
    path.write_text(path.read_text() + "\ndef test_c():\n    pass\n")
    changed, _, cases = _ray_run(pytester, "changed")
    assert "head start" not in changed.stdout.str()
    assert ("test_many", "test_c") in cases
    again, _, again_cases = _ray_run(pytester, "again")
    again.stdout.fnmatch_lines([HEAD_START_LINE])
    assert again_cases == cases


@pytest.mark.ray_cluster
def test_a_worker_crashing_in_its_head_start_loses_nothing(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makepyfile(
        test_crash="""
        import os, time, pytest
        def test_exits():
            time.sleep(0.5)  # the longest: it goes first, in the head start
            os._exit(13)
        @pytest.mark.parametrize("i", range(12))
        def test_others(i):
            time.sleep(0.02)
        """
    )
    args = ("--ray", "--ray-workers", "2", "--ray-retries", "1")
    pytester.runpytest_subprocess(*args, timeout=240).assert_outcomes(passed=12, errors=1)
    result = pytester.runpytest_subprocess(*args, timeout=240)
    result.stdout.fnmatch_lines([HEAD_START_LINE])
    result.assert_outcomes(passed=12, errors=1)
    result.stdout.fnmatch_lines(
        ["worker gw* crashed while running test_crash.py::test_exits (exit code 13)"]
    )


@pytest.mark.ray_cluster
def test_a_run_with_shaped_workers_keeps_the_ordinary_guesses(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makepyfile(
        test_mixed="""
        import os, pytest
        @pytest.mark.resources(cpus=2)
        def test_big():
            pass
        @pytest.mark.parametrize("i", range(20))
        def test_small(i):
            pass
        """
    )
    args = ("--ray", "--ray-workers", "2", "-v")
    first = pytester.runpytest_subprocess(*args, timeout=240)
    first.assert_outcomes(passed=21)
    second = pytester.runpytest_subprocess(*args, timeout=240)
    # The test that needs two CPUs is never guessed; the others are kept.
    second.stdout.fnmatch_lines([HEAD_START_LINE])
    assert "not collected this time" not in second.stdout.str()
    second.assert_outcomes(passed=21)
    assert len(re.findall(r"test_small\[\d+\] PASSED", second.stdout.str())) == 20
