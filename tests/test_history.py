"""The run history: recording, pruning, queries, the `history` report, and a broken file."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
import subprocess
import warnings
from contextlib import closing
from pathlib import Path

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.store.durations import DurationStore, StoreWarning
from orchestrator.store.history import (
    HistoryStore,
    MetricRecord,
    current_commit,
    history_lines,
)
from orchestrator.store.history import TestResult as Result

A = "tests/test_model.py::test_accuracy"
B = "tests/test_model.py::test_loss"
C = "tests/test_io.py::test_read[big]"


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(tmp_path / ".orchestrator" / "durations.db")


def record(
    store: HistoryStore,
    outcomes: dict[str, str],
    metrics: dict[str, float] | None = None,
    *,
    duration: float = 1.0,
    flaky: tuple[str, ...] = (),
) -> int:
    """One run: each test with its outcome, and metric values for test A under their names."""
    results = [
        Result(
            nodeid, outcome, duration, attempts=2 if nodeid in flaky else 1, flaky=nodeid in flaky
        )
        for nodeid, outcome in outcomes.items()
    ]
    passed = outcomes.get(A) == "passed"
    records = [
        MetricRecord(A, name, value, passed=passed) for name, value in (metrics or {}).items()
    ]
    return store.record_run(results, records)


# -- recording --------------------------------------------------------------------------


def test_record_run_and_list_runs(store: HistoryStore) -> None:
    first = store.record_run(
        [Result(A, "passed", 0.5), Result(B, "failed", 0.2), Result(C, "error", 0.1)],
        commit="a" * 40,
        started=1000.0,
        wall=3.5,
        workers=4,
    )
    second = store.record_run([Result(A, "skipped", 0.0)])
    assert second > first
    newest, oldest = store.runs()
    assert (oldest.id, oldest.started, oldest.commit, oldest.wall, oldest.workers) == (
        first,
        1000.0,
        "a" * 40,
        3.5,
        4,
    )
    assert (oldest.tests, oldest.failed) == (3, 2)  # errors count as failures
    assert (newest.id, newest.commit, newest.wall, newest.workers, newest.tests) == (
        second,
        None,
        None,
        None,
        1,
    )
    assert [r.id for r in store.runs(limit=1)] == [second]
    assert store.run_count() == 2
    assert (store.path.parent / ".gitignore").exists()


def test_a_test_listed_twice_keeps_its_last_entry(store: HistoryStore) -> None:
    store.record_run(
        [Result(A, "failed", 1.0), Result(A, "passed", 2.0, attempts=2, flaky=True)],
        [
            MetricRecord(A, "acc", 0.1),
            MetricRecord(A, "acc", 0.9),
            MetricRecord(A, "x", float("nan")),
        ],
    )
    history = store.test_history(A)
    assert history.outcomes == ["passed"]
    assert history.durations == [2.0]
    assert history.flaky_runs == 1
    assert {name: [p.value for p in points] for name, points in history.metrics.items()} == {
        "acc": [0.9]
    }
    assert store.runs()[0].tests == 1


def test_unknown_outcome_is_a_programming_error(store: HistoryStore) -> None:
    with pytest.raises(ValueError, match="unknown outcome 'PASSED'"):
        store.record_run([Result(A, "PASSED", 1.0)])
    assert store.run_count() == 0


def test_bad_durations_are_stored_as_zero(store: HistoryStore) -> None:
    store.record_run([Result(A, "passed", float("nan")), Result(B, "passed", -3.0)])
    assert store.test_history(A).durations == [0.0]
    assert store.test_history(B).durations == [0.0]


def test_old_runs_are_pruned(store: HistoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HistoryStore, "MAX_RUNS", 3)
    record(store, {A: "passed", C: "passed"}, {"acc": 0.1})  # C and this value go away
    ids = [record(store, {A: "passed", B: "passed"}, {"acc": 0.5 + i / 10}) for i in range(3)]
    assert [r.id for r in store.runs()] == ids[::-1]
    assert store.run_count() == 3
    assert store.metric_history(10) == {A: {"acc": [0.5, 0.6, 0.7]}}
    assert store.find_tests(C) == []
    assert store.test_history(C).runs == ()
    # nothing of the pruned run is left behind in the file
    with closing(sqlite3.connect(store.path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM tests").fetchone() == (2,)
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone() == (6,)
        assert conn.execute("SELECT COUNT(*) FROM metric_values").fetchone() == (3,)


# The layout stores had before results were kept by run: by test, then run.
_KEPT_BY_TEST = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, revision TEXT,
    wall REAL, workers INTEGER, tests INTEGER NOT NULL, failed INTEGER NOT NULL);
CREATE TABLE tests (id INTEGER PRIMARY KEY, nodeid TEXT NOT NULL UNIQUE);
CREATE TABLE results (test_id INTEGER NOT NULL, run_id INTEGER NOT NULL, outcome TEXT NOT NULL,
    duration REAL NOT NULL, attempts INTEGER NOT NULL, flaky INTEGER NOT NULL,
    kind TEXT NOT NULL, worker TEXT, PRIMARY KEY (test_id, run_id)) WITHOUT ROWID;
CREATE INDEX results_by_run ON results (run_id);
CREATE TABLE metric_series (id INTEGER PRIMARY KEY, test_id INTEGER NOT NULL, name TEXT NOT NULL,
    higher_is_better INTEGER NOT NULL, UNIQUE (test_id, name));
CREATE TABLE metric_values (series_id INTEGER NOT NULL, run_id INTEGER NOT NULL,
    value REAL NOT NULL, passed INTEGER NOT NULL, PRIMARY KEY (series_id, run_id)) WITHOUT ROWID;
CREATE INDEX metric_values_by_run ON metric_values (run_id);
INSERT INTO runs VALUES (1, 100.0, NULL, 5.0, 2, 2, 0), (2, 200.0, NULL, 5.0, 2, 2, 1),
    (3, 300.0, NULL, 5.0, 2, 2, 0);
INSERT INTO tests VALUES (1, 'tests/test_model.py::test_accuracy'),
    (2, 'tests/test_model.py::test_loss'), (3, 'tests/test_io.py::test_read[big]');
INSERT INTO results VALUES (1, 1, 'passed', 1.0, 1, 0, 'unit', 'gw0'),
    (3, 1, 'passed', 4.0, 1, 0, 'unit', 'gw1'), (1, 2, 'failed', 2.0, 1, 0, 'unit', 'gw0'),
    (2, 2, 'passed', 3.0, 2, 1, 'unit', 'gw1'), (1, 3, 'passed', 3.0, 1, 0, 'unit', 'gw0'),
    (2, 3, 'passed', 3.0, 1, 0, 'unit', 'gw1');
INSERT INTO metric_series VALUES (1, 1, 'acc', 1);
INSERT INTO metric_values VALUES (1, 1, 0.5, 1), (1, 3, 0.7, 1);
"""


def _first_key_column(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return next(row[1] for row in conn.execute("PRAGMA table_info(results)") if row[5] == 1)


def test_a_store_kept_by_test_is_read_as_it_is_and_moved_by_the_next_run(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(store.path)) as conn:
        conn.executescript(_KEPT_BY_TEST)
    # reading answers from the old layout and leaves the file as it is
    assert store.find_tests("test_model") == [A, B]
    assert store.slowest(3) == [(C, 4.0, 1), (B, 3.0, 2), (A, 2.0, 3)]
    assert store.flakiest(3) == [(B, 1, 0, 2), (A, 0, 1, 3)]
    assert store.test_history(A).outcomes == ["passed", "failed", "passed"]
    assert _first_key_column(store.path) == "test_id"

    monkeypatch.setattr(HistoryStore, "MAX_RUNS", 4)
    new = record(store, {A: "passed", B: "passed"}, {"acc": 0.9})
    assert new == 4
    assert _first_key_column(store.path) == "run_id"
    # every run recorded before is still there, with the new one
    history = store.test_history(A)
    assert [r.run_id for r in history.runs] == [1, 2, 3, 4]
    assert history.outcomes == ["passed", "failed", "passed", "passed"]
    assert history.durations == [1.0, 2.0, 3.0, 1.0]
    assert [p.value for p in history.metrics["acc"]] == [0.5, 0.7, 0.9]
    assert store.test_history(C).durations == [4.0]
    assert store.flakiest(3) == [(B, 1, 0, 3), (A, 0, 1, 4)]
    assert store.metric_history(10) == {A: {"acc": [0.5, 0.7, 0.9]}}
    # the first run, the only one C took part in, is pruned with the next: C goes with it
    record(store, {A: "passed", B: "passed"})
    assert [r.id for r in store.runs()] == [5, 4, 3, 2]
    assert store.find_tests(C) == []
    assert store.find_tests("test_model") == [A, B]
    assert store.test_history(A).durations == [2.0, 3.0, 1.0, 1.0]
    with closing(sqlite3.connect(store.path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM tests").fetchone() == (2,)
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone() == (8,)


def test_a_test_stays_while_a_run_it_took_part_in_is_kept(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HistoryStore, "MAX_RUNS", 2)
    record(store, {A: "passed", C: "passed"})
    record(store, {A: "passed", C: "failed"})  # C's last run
    record(store, {A: "passed"})
    assert store.find_tests(C) == [C]  # its last run is kept
    assert store.test_history(C).outcomes == ["failed"]
    record(store, {A: "passed"})
    assert store.find_tests(C) == []


def _recorder(path: str, worker: int) -> None:
    store = HistoryStore(Path(path))
    for i in range(10):
        store.record_run(
            [Result(f"t.py::w{worker}_{i}", "passed", 1.0), Result(A, "passed", 1.0)],
            [MetricRecord(A, "acc", float(worker))],
        )


def test_concurrent_runs_are_all_recorded(store: HistoryStore) -> None:
    store.path.parent.mkdir(parents=True)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_recorder, args=(str(store.path), n)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    runs = store.runs(limit=100)
    assert len({r.id for r in runs}) == 30
    assert all(r.tests == 2 for r in runs)
    assert len(store.test_history(A, limit=100).runs) == 30
    assert sorted(store.metric_history(100)[A]["acc"]) == [0.0] * 10 + [1.0] * 10 + [2.0] * 10


def test_history_shares_the_duration_store_file(store: HistoryStore) -> None:
    durations = DurationStore(store.path)
    durations.record({A: 2.0})
    record(store, {A: "passed"})
    durations.record({A: 4.0})
    assert durations.load() == {A: 3.0}
    assert store.run_count() == 1
    assert sorted(p.name for p in store.path.parent.iterdir()) == [".gitignore", "durations.db"]


def test_the_store_holds_plain_values_only(store: HistoryStore) -> None:
    """Nothing in the store runs code when it is read: text and numbers, no pickled blobs."""
    DurationStore(store.path).record({A: 2.0, f"entry:{A.split('::')[0]}": 0.5})
    record(store, {A: "passed", B: "failed"}, {"acc": 0.9}, flaky=(B,))
    with closing(sqlite3.connect(store.path)) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        kinds = set()
        for table in tables:
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            for column in columns:
                kinds.update(
                    row[0] for row in conn.execute(f"SELECT DISTINCT typeof({column}) FROM {table}")
                )
    assert tables and kinds <= {"text", "integer", "real", "null"}, kinds


# -- metric baselines -------------------------------------------------------------------


def test_metric_history_keeps_passing_runs_and_the_window(store: HistoryStore) -> None:
    for i, outcome in enumerate(["passed", "failed", "passed", "passed", "error", "passed"]):
        record(store, {A: outcome, B: "passed"}, {"acc": float(i), "loss": 10.0 - i})
    assert store.metric_history(10) == {
        A: {"acc": [0.0, 2.0, 3.0, 5.0], "loss": [10.0, 8.0, 7.0, 5.0]}
    }
    assert store.metric_history(2) == {A: {"acc": [3.0, 5.0], "loss": [7.0, 5.0]}}
    assert store.metric_history(0) == {}


def test_metric_history_for_given_tests(store: HistoryStore) -> None:
    store.record_run(
        [Result(A, "passed", 1.0), Result(B, "passed", 1.0)],
        [MetricRecord(A, "acc", 0.9), MetricRecord(B, "loss", 0.2, higher_is_better=False)],
    )
    assert store.metric_history(5, [B]) == {B: {"loss": [0.2]}}
    assert store.metric_history(5, []) == {}
    # more ids than SQLite takes as parameters of one statement
    many = [f"tests/test_gen.py::test_{i}" for i in range(40_000)] + [A]
    assert store.metric_history(5, many) == {A: {"acc": [0.9]}}


def test_reading_never_creates_a_store(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / ".orchestrator" / "durations.db")
    assert store.metric_history(10) == {}
    assert store.runs() == []
    assert store.find_tests("x") == []
    assert store.slowest(5) == []
    assert store.flakiest(5) == []
    assert store.test_history(A).runs == ()
    assert len(history_lines(store)) == 1
    assert not (tmp_path / ".orchestrator").exists()


# -- queries ----------------------------------------------------------------------------


def test_find_tests(store: HistoryStore) -> None:
    record(store, {A: "passed", B: "passed", C: "passed", A + "[x]": "passed"})
    assert store.find_tests(A) == [A]  # exact wins even though A[x] contains it
    assert store.find_tests("test_model") == [A, A + "[x]", B]
    assert store.find_tests("[big]") == [C]
    assert store.find_tests("TEST_MODEL") == []


def test_slowest_by_median_without_skips(store: HistoryStore) -> None:
    for a, b, c in [(1.0, 5.0, 0.1), (9.0, 5.0, 0.1), (2.0, 1.0, 0.1), (3.0, 1.0, 0.1)]:
        store.record_run([Result(A, "passed", a), Result(B, "failed", b), Result(C, "passed", c)])
    store.record_run([Result(C, "skipped", 0.0)] * 1)
    slowest = store.slowest(2)
    assert slowest == [(B, 3.0, 4), (A, 2.5, 4)]
    assert slowest[0].median_duration == 3.0
    assert store.slowest(10)[-1] == (C, 0.1, 4)


def test_flakiest_by_flake_rate(store: HistoryStore) -> None:
    record(store, {A: "passed", B: "passed", C: "passed"}, flaky=(A,))
    record(store, {A: "passed", B: "failed", C: "passed"}, flaky=(A,))
    record(store, {A: "passed", B: "passed", C: "passed"}, flaky=(B,))
    record(store, {A: "failed", B: "passed", C: "passed"})
    assert store.flakiest(10) == [(A, 2, 1, 4), (B, 1, 1, 4)]
    assert store.flakiest(1)[0].nodeid == A


def test_test_history(store: HistoryStore) -> None:
    ids = [
        record(store, {A: "passed"}, {"acc": 0.8}, duration=1.0),
        record(store, {A: "failed"}, {"acc": 0.2}, duration=2.0),
        record(store, {A: "passed"}, {"acc": 0.9}, duration=3.0, flaky=(A,)),
    ]
    history = store.test_history(A)
    assert [r.run_id for r in history.runs] == ids
    assert history.outcomes == ["passed", "failed", "passed"]
    assert history.durations == [1.0, 2.0, 3.0]
    assert (history.flaky_runs, history.failed_runs) == (1, 1)
    assert [tuple(p) for p in history.metrics["acc"]] == [
        (ids[0], 0.8, True),
        (ids[1], 0.2, False),
        (ids[2], 0.9, True),
    ]
    assert history.higher_is_better == {"acc": True}
    last_two = store.test_history(A, limit=2)
    assert [r.run_id for r in last_two.runs] == ids[1:]
    assert [p.run_id for p in last_two.metrics["acc"]] == ids[1:]


# -- the report -------------------------------------------------------------------------


def test_report_of_an_empty_store(store: HistoryStore) -> None:
    (line,) = history_lines(store)
    assert "no runs recorded yet" in line and "orchestrator run" in line
    (line,) = history_lines(store, "anything")
    assert "no runs recorded yet" in line


def test_report_overview(store: HistoryStore) -> None:
    store.record_run(
        [Result(A, "passed", 0.5), Result(B, "passed", 12.0), Result(C, "passed", 0.1)],
        [MetricRecord(A, "accuracy", 0.91)],
        commit="0123456789abcdef" * 2 + "01234567",
        wall=75.0,
        workers=8,
    )
    for i in range(3):
        store.record_run(
            [
                Result(A, "passed", 0.5, attempts=2, flaky=i == 0),
                Result(B, "passed", 10.0 + i),
                Result(C, "failed", 0.1),
            ],
            [MetricRecord(A, "accuracy", 0.92 + i / 100)],
            wall=70.0,
        )
    lines = history_lines(store, top=2)
    text = "\n".join(lines)
    assert lines[0] == f"4 run(s) recorded in {store.path}"
    assert "01234567  wall   1m15s  8 worker(s)  3 tests  0 failed" in text
    assert "wall   1m10s  - workers  3 tests  1 failed" in text
    slow_header = lines.index("slowest tests (median duration; trend over the last 30 runs):")
    assert lines[slow_header + 1].split() == ["11.5s", "█▁▅█", B]
    assert lines[slow_header + 2].split() == ["0.50s", "▄▄▄▄", A]
    assert C not in lines[slow_header + 3]  # only the top 2
    flaky_header = lines.index("flakiest tests:")
    assert lines[flaky_header + 1] == f"  1/4 runs flaky, 0 failed  {A}"
    assert lines[flaky_header + 2] == f"  0/4 runs flaky, 3 failed  {C}"
    assert lines[-1] == f"  accuracy = 0.94  ▁▃▆█  {A}"


def test_report_of_one_test(store: HistoryStore) -> None:
    outcomes = ["passed", "failed", "passed", "passed", "skipped", "passed"]
    for i, outcome in enumerate(outcomes):
        store.record_run(
            [
                Result(A, outcome, 1.0 + i, attempts=2 if i == 2 else 1, flaky=i == 2),
                Result(B, "xfailed", 0.1),
            ],
            [
                MetricRecord(
                    A, "loss", 1.0 - i / 10, higher_is_better=False, passed=outcome == "passed"
                )
            ],
        )
    lines = history_lines(store, "test_accuracy")
    assert lines[0] == f"{A}: last 6 run(s) in {store.path}"
    assert lines[1].split()[:2] == ["duration", "▁▂▄▅▇█"]
    assert "min 1.00s  median 3.50s  max 6.00s  latest 6.00s" in lines[1]
    assert lines[2].split()[:2] == ["outcomes", ".Ff.s."]
    assert lines[3] == "  flaky in 1/6 runs, failed in 1/6 runs"
    assert lines[4] == "  metric loss (lower is better)  █▇▅▄▂▁"
    # passing values: 1.0, 0.8, 0.7, 0.5 -> median 0.75
    assert lines[5] == (
        "    latest 0.5  baseline 0.75 (median of the last 4 passing runs)  "
        "last: 0.9, 0.8, 0.7, 0.6, 0.5"
    )
    assert history_lines(store, B)[2].split()[1] == "xxxxxx"


def test_report_of_an_unknown_test(store: HistoryStore) -> None:
    record(store, {A: "passed"})
    with pytest.raises(OrchestratorError) as info:
        history_lines(store, "test_nothing")
    message = str(info.value)
    assert "no test matching 'test_nothing'" in message
    assert str(store.path) in message
    assert "orchestrator run" in message


def test_report_of_an_ambiguous_test(store: HistoryStore) -> None:
    record(store, {f"tests/test_p.py::test_case[{i:02d}]": "passed" for i in range(12)})
    with pytest.raises(OrchestratorError) as info:
        history_lines(store, "test_case")
    lines = str(info.value).splitlines()
    assert lines[0] == "12 tests match 'test_case':"
    assert lines[1:11] == [f"  tests/test_p.py::test_case[{i:02d}]" for i in range(10)]
    assert lines[11] == "  ... and 2 more"
    assert "longer part of the test id" in lines[12]


# -- a broken file ----------------------------------------------------------------------


def test_corrupt_file_is_set_aside_when_reading(store: HistoryStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b"not a database at all" * 200)
    with pytest.warns(StoreWarning, match="run history .* is unreadable"):
        assert store.metric_history(10) == {}
    assert list(store.path.parent.glob("durations.db.corrupt-*"))
    assert not store.path.exists()


def test_corrupt_file_is_set_aside_and_the_run_recorded(store: HistoryStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b"not a database at all" * 200)
    with pytest.warns(StoreWarning, match="Earlier runs and durations are forgotten"):
        run_id = record(store, {A: "passed"}, {"acc": 0.5})
    assert [r.id for r in store.runs()] == [run_id]
    assert store.metric_history(3) == {A: {"acc": [0.5]}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert history_lines(store)[0].startswith("1 run(s) recorded")


def test_a_store_that_cannot_be_written_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = HistoryStore(tmp_path / "durations.db")

    def locked(self: HistoryStore, run: object) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(HistoryStore, "_write", locked)
    with pytest.warns(StoreWarning), pytest.raises(OrchestratorError) as info:
        store.record_run([Result(A, "passed", 1.0)])
    assert "could not record the run in" in str(info.value)
    assert "ORCHESTRATOR_STORE" in str(info.value)


# -- the commit -------------------------------------------------------------------------


def _isolated_git(monkeypatch: pytest.MonkeyPatch, ceiling: Path) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(ceiling))
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_current_commit_of_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _isolated_git(monkeypatch, tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    git("init", "-q")
    assert current_commit(repo) is None  # no commit yet
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "first",
    )
    head = git("rev-parse", "HEAD")
    assert current_commit(repo) == head
    (repo / "sub").mkdir()
    assert current_commit(repo / "sub") == head


def test_current_commit_outside_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _isolated_git(monkeypatch, tmp_path)
    assert current_commit(tmp_path) is None
    assert current_commit(tmp_path / "missing") is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to be found
    assert current_commit(tmp_path) is None
