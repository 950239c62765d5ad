"""Run history: every run's outcomes, durations and metrics, in the duration store's file.

The duration store keeps one moving average per test, which is all scheduling needs. Trends,
flake rates and metric baselines need the runs themselves, so each run adds plain rows here,
and the oldest runs are pruned so the file stays small. Sharing the SQLite file keeps one
thing to ignore, cache in CI or delete.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import subprocess
import time
from array import array
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

from orchestrator.errors import OrchestratorError
from orchestrator.pipelines.flaky import RunOfTest
from orchestrator.pipelines.metrics import fmt, median, sparkline
from orchestrator.reports.progress import format_duration
from orchestrator.store.durations import SqliteStore

#: Outcomes a test can have in a run, and the letter `orchestrator history TEST` shows for each.
OUTCOME_LETTERS = {
    "passed": ".",
    "failed": "F",
    "error": "E",
    "skipped": "s",
    "xfailed": "x",
    "xpassed": "X",
}
FLAKY_LETTER = "f"
FAILED_OUTCOMES = ("failed", "error")
#: Passing values a metric's baseline is the median of, when shown by `orchestrator history`.
BASELINE_WINDOW = 10
#: Runs, candidates and values the history views show.
RECENT_RUNS = 5
MAX_CANDIDATES = 10
LAST_VALUES = 5
TREND_RUNS = 30
#: Characters of a failure message the history keeps.
MESSAGE_CHARS = 500

# Tests and metric series are numbered once, so per-run rows hold integers, not test ids.
# A run's results are stored together (keyed by run, then test): recording a run appends to
# the end of the table and pruning cuts from its start, where rows kept per test would have
# a run touch one page per test (a second and more for 20,000 tests over 200 runs).
# `tests.last_run` is the newest run with a result for the test, so that tests whose runs are
# all pruned are found without looking through the results.
_RESULTS = """(
    run_id INTEGER NOT NULL,
    test_id INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    duration REAL NOT NULL,
    attempts INTEGER NOT NULL,
    flaky INTEGER NOT NULL,
    kind TEXT NOT NULL,
    worker TEXT,
    PRIMARY KEY (run_id, test_id)
) WITHOUT ROWID"""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    revision TEXT,
    wall REAL,
    workers INTEGER,
    tests INTEGER NOT NULL,
    failed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tests (
    id INTEGER PRIMARY KEY,
    nodeid TEXT NOT NULL UNIQUE,
    last_run INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS results {_RESULTS};
CREATE TABLE IF NOT EXISTS metric_series (
    id INTEGER PRIMARY KEY,
    test_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    higher_is_better INTEGER NOT NULL,
    UNIQUE (test_id, name)
);
CREATE TABLE IF NOT EXISTS metric_values (
    series_id INTEGER NOT NULL,
    run_id INTEGER NOT NULL,
    value REAL NOT NULL,
    passed INTEGER NOT NULL,
    PRIMARY KEY (series_id, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metric_values_by_run ON metric_values (run_id);
CREATE TABLE IF NOT EXISTS failure_messages (
    run_id INTEGER NOT NULL,
    test_id INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (run_id, test_id)
) WITHOUT ROWID;
"""

_UPSERT_TEST = """
INSERT INTO tests (nodeid, last_run) VALUES (?, ?)
ON CONFLICT (nodeid) DO UPDATE SET last_run = excluded.last_run
"""
_INSERT_RESULT = """
INSERT OR REPLACE INTO results (run_id, test_id, outcome, duration, attempts, flaky, kind, worker)
SELECT ?, id, ?, ?, ?, ?, ?, ? FROM tests WHERE nodeid = ?
"""
_UPSERT_SERIES = """
INSERT INTO metric_series (test_id, name, higher_is_better, gate)
SELECT id, ?, ?, ? FROM tests WHERE nodeid = ?
ON CONFLICT (test_id, name) DO UPDATE SET
    higher_is_better = excluded.higher_is_better, gate = excluded.gate
"""
_INSERT_VALUE = """
INSERT OR REPLACE INTO metric_values (series_id, run_id, value, passed, samples)
SELECT s.id, ?, ?, ?, ? FROM tests AS t JOIN metric_series AS s ON s.test_id = t.id
WHERE t.nodeid = ? AND s.name = ?
"""
# Orphans once their last runs are pruned (`?`: the newest run pruned); NOT EXISTS seeks
# through the primary key and the unique index.
_PRUNE_SERIES = """
DELETE FROM metric_series WHERE NOT EXISTS
    (SELECT 1 FROM metric_values AS v WHERE v.series_id = metric_series.id)
"""
_PRUNE_TESTS = """
DELETE FROM tests WHERE last_run <= ?
    AND NOT EXISTS (SELECT 1 FROM metric_series AS s WHERE s.test_id = tests.id)
"""
# Stores written before results were kept by run hold them by test: moved once, by the first
# run recorded with this version (in that run's transaction, so two runs cannot both do it).
_MIGRATE_BY_RUN = f"""
ALTER TABLE tests ADD COLUMN last_run INTEGER NOT NULL DEFAULT 0;
UPDATE tests SET last_run = coalesce(
    (SELECT max(r.run_id) FROM results AS r WHERE r.test_id = tests.id), 0);
CREATE TABLE results_new {_RESULTS};
INSERT INTO results_new (run_id, test_id, outcome, duration, attempts, flaky, kind, worker)
SELECT run_id, test_id, outcome, duration, attempts, flaky, kind, worker FROM results
ORDER BY run_id, test_id;
DROP TABLE results;
ALTER TABLE results_new RENAME TO results
"""
# The newest `?` passing values of each series: the subquery finds, per series, the run where
# that window starts, and the primary key serves the values from there on.
_METRIC_WINDOW = """
SELECT t.nodeid, s.name, v.value
FROM {tests} JOIN metric_series AS s ON s.test_id = t.id
JOIN metric_values AS v ON v.series_id = s.id
WHERE v.passed = 1 AND v.run_id >= coalesce((
    SELECT q.run_id FROM metric_values AS q WHERE q.series_id = s.id AND q.passed = 1
    ORDER BY q.run_id DESC LIMIT 1 OFFSET ?), 0)
ORDER BY s.id, v.run_id
"""
# Tests with a flaky or failed run are usually few: found first, then only their runs counted.
_FLAKY_OR_FAILED = """
SELECT test_id, SUM(flaky), SUM(outcome IN ('failed', 'error')) FROM results
WHERE flaky != 0 OR outcome IN ('failed', 'error') GROUP BY test_id
"""

T = TypeVar("T")
#: Metric values and pooled samples by test and metric, and how many runs they come from.
MetricsAt = tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, list[float]]], int]


@dataclass(frozen=True)
class TestResult:
    """How one test ended in one run, as the history records it."""

    __test__ = False  # not a pytest test class

    nodeid: str
    outcome: str  # "passed" | "failed" | "error" | "skipped" | "xfailed" | "xpassed"
    duration: float  # seconds, setup+call+teardown of the final attempt
    attempts: int = 1
    flaky: bool = False  # failed then passed on a retry
    kind: str = "unit"
    worker: str | None = None
    #: What went wrong: the final failure's message, or a flaky test's failed attempt's.
    message: str | None = None


@dataclass(frozen=True)
class MetricRecord:
    """A number a test reported in one run."""

    nodeid: str
    name: str
    value: float
    higher_is_better: bool = True
    passed: bool = True  # whether the test passed in that run (only passing runs form baselines)
    #: The values it was the median of (one per seed or fold), when there were several.
    samples: tuple[float, ...] = ()
    #: The gate the test gave it (``record_metric(..., gate="-1%")``), if any.
    gate: str | None = None


@dataclass(frozen=True)
class RunInfo:
    """One recorded run, for listings."""

    id: int
    started: float
    commit: str | None
    wall: float | None
    workers: int | None
    tests: int
    failed: int


@dataclass(frozen=True)
class TestRun:
    """One test in one run."""

    __test__ = False  # not a pytest test class

    run_id: int
    outcome: str
    duration: float
    attempts: int
    flaky: bool


class MetricPoint(NamedTuple):
    """One value of a test's metric, and whether the test passed in that run."""

    run_id: int
    value: float
    passed: bool


@dataclass(frozen=True)
class TestHistory:
    """A test's recent runs and metrics, oldest first."""

    __test__ = False  # not a pytest test class

    nodeid: str
    runs: tuple[TestRun, ...] = ()
    metrics: Mapping[str, tuple[MetricPoint, ...]] = field(default_factory=dict)
    higher_is_better: Mapping[str, bool] = field(default_factory=dict)

    @property
    def durations(self) -> list[float]:
        return [r.duration for r in self.runs]

    @property
    def outcomes(self) -> list[str]:
        return [r.outcome for r in self.runs]

    @property
    def flaky_runs(self) -> int:
        return sum(r.flaky for r in self.runs)

    @property
    def failed_runs(self) -> int:
        return sum(r.outcome in FAILED_OUTCOMES for r in self.runs)


class LatestMetric(NamedTuple):
    """A metric's newest recorded value."""

    value: float
    #: The values it was the median of (itself, where it was one).
    samples: list[float]
    passed: bool
    higher_is_better: bool
    gate: str | None


class SlowTest(NamedTuple):
    """A test and its median duration over the runs that recorded it."""

    nodeid: str
    median_duration: float
    runs: int


class FlakyTest(NamedTuple):
    """A test that was flaky or failed in some of the runs that recorded it."""

    nodeid: str
    flaky_runs: int
    failed_runs: int
    runs: int


class HistoryStore(SqliteStore):
    """Records runs into, and answers questions from, the history tables at ``path``."""

    MAX_RUNS = 200  # older runs are pruned when a run is recorded

    schema = _SCHEMA
    added_columns = (
        ("runs", "branch", "TEXT"),
        ("runs", "tag", "TEXT"),
        ("metric_values", "samples", "TEXT"),
        ("metric_series", "gate", "TEXT"),
    )
    what = "run history"
    consequence = "Earlier runs and durations are forgotten; metric baselines start again."

    # -- writing -----------------------------------------------------------------------
    def record_run(
        self,
        results: Sequence[TestResult],
        metrics: Sequence[MetricRecord] = (),
        *,
        commit: str | None = None,
        started: float | None = None,
        wall: float | None = None,
        workers: int | None = None,
        branch: str | None = None,
        tag: str | None = None,
    ) -> int:
        """Add one run in one transaction, prune beyond :attr:`MAX_RUNS`; returns the run's id.

        A test listed twice keeps its last entry; metric values that are not finite are left
        out (they cannot be part of a baseline). A store that cannot be read is set aside and
        the run goes into a new one; if even that fails, :class:`OrchestratorError` says why.
        """
        by_test = {r.nodeid: r for r in results}
        for r in by_test.values():
            if r.outcome not in OUTCOME_LETTERS:
                raise ValueError(f"{r.nodeid}: unknown outcome {r.outcome!r}")
        by_metric = {(m.nodeid, m.name): m for m in metrics if math.isfinite(m.value)}
        failed = sum(r.outcome in FAILED_OUTCOMES for r in by_test.values())
        run = _Run(
            time.time() if started is None else started,
            commit,
            wall,
            workers,
            list(by_test.values()),
            list(by_metric.values()),
            failed,
            branch,
            tag,
        )
        try:
            return self._write(run)
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc)
        try:
            return self._write(run)
        except sqlite3.DatabaseError as exc:
            raise OrchestratorError(
                f"could not record the run in {self.path} ({exc}); check that its directory "
                "is writable, or point ORCHESTRATOR_STORE at another file"
            ) from None

    def _write(self, run: _Run) -> int:
        with self._transaction() as conn:
            _keep_results_by_run(conn)
            run_id = conn.execute(
                "INSERT INTO runs (started, revision, wall, workers, tests, failed, branch, tag)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.started,
                    run.commit,
                    run.wall,
                    run.workers,
                    len(run.results),
                    run.failed,
                    run.branch,
                    run.tag,
                ),
            ).lastrowid
            assert run_id is not None
            conn.executemany(_UPSERT_TEST, ((r.nodeid, run_id) for r in run.results))
            conn.executemany(
                "INSERT OR IGNORE INTO tests (nodeid) VALUES (?)",
                ((n,) for n in {m.nodeid for m in run.metrics}),
            )
            conn.executemany(
                _INSERT_RESULT,
                (
                    (
                        run_id,
                        r.outcome,
                        _seconds(r.duration),
                        r.attempts,
                        int(r.flaky),
                        r.kind,
                        r.worker,
                        r.nodeid,
                    )
                    for r in run.results
                ),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO failure_messages (run_id, test_id, message)"
                " SELECT ?, id, ? FROM tests WHERE nodeid = ?",
                ((run_id, r.message[:MESSAGE_CHARS], r.nodeid) for r in run.results if r.message),
            )
            conn.executemany(
                _UPSERT_SERIES,
                ((m.name, int(m.higher_is_better), m.gate, m.nodeid) for m in run.metrics),
            )
            conn.executemany(
                _INSERT_VALUE,
                (
                    (
                        run_id,
                        float(m.value),
                        int(m.passed),
                        json.dumps([float(v) for v in m.samples]) if m.samples else None,
                        m.nodeid,
                        m.name,
                    )
                    for m in run.metrics
                ),
            )
            self._prune(conn)
        return run_id

    def _prune(self, conn: sqlite3.Connection) -> None:
        cutoff = conn.execute(
            "SELECT id FROM runs ORDER BY id DESC LIMIT 1 OFFSET ?", (self.MAX_RUNS,)
        ).fetchone()
        if cutoff is None:
            return
        conn.execute("DELETE FROM runs WHERE id <= ?", cutoff)
        conn.execute("DELETE FROM results WHERE run_id <= ?", cutoff)
        conn.execute("DELETE FROM metric_values WHERE run_id <= ?", cutoff)
        conn.execute("DELETE FROM failure_messages WHERE run_id <= ?", cutoff)
        conn.execute(_PRUNE_SERIES)
        conn.execute(_PRUNE_TESTS, cutoff)

    # -- reading -----------------------------------------------------------------------
    def _query(self, work: Callable[[sqlite3.Connection], T], empty: T) -> T:
        """Run ``work`` on the store; ``empty`` when there is none, or it is unreadable."""
        if not self.path.exists():
            return empty
        try:
            conn = self._connect()
            try:
                return work(conn)
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc, stacklevel=4)
            return empty

    def metric_history(
        self, window: int, nodeids: Collection[str] | None = None
    ) -> dict[str, dict[str, list[float]]]:
        """``{nodeid: {metric: [values oldest -> newest]}}`` from runs in which the test passed.

        At most ``window`` newest values per metric; only ``nodeids`` when given. Never creates
        a store.
        """
        if window < 1:
            return {}

        def work(conn: sqlite3.Connection) -> dict[str, dict[str, list[float]]]:
            tests = "tests AS t"
            if nodeids is not None:
                # Most tests record no metric: look up only those that do (a few, against
                # 20,000 ids, which would exceed SQLite's parameter limit in `IN (?, ...)`).
                wanted = set(nodeids).intersection(
                    nodeid
                    for (nodeid,) in conn.execute(
                        "SELECT DISTINCT t.nodeid FROM metric_series AS s"
                        " JOIN tests AS t ON t.id = s.test_id"
                    )
                )
                if not wanted:
                    return {}
                conn.execute("CREATE TEMP TABLE wanted (nodeid TEXT PRIMARY KEY) WITHOUT ROWID")
                conn.executemany("INSERT INTO temp.wanted VALUES (?)", ((n,) for n in wanted))
                tests = "temp.wanted AS w JOIN tests AS t ON t.nodeid = w.nodeid"
            out: dict[str, dict[str, list[float]]] = {}
            for nodeid, name, value in conn.execute(
                _METRIC_WINDOW.format(tests=tests), (window - 1,)
            ):
                out.setdefault(nodeid, {}).setdefault(name, []).append(float(value))
            return out

        return self._query(work, {})

    def metric_baselines_at(
        self, ref: str, window: int, nodeids: Collection[str] | None = None
    ) -> MetricsAt:
        """The metric history of the runs recorded at ``ref`` (a branch, a tag, or a commit
        of 7 or more hex digits): ``(values, samples, runs)``, where ``values`` is as in
        :meth:`metric_history` (the newest ``window`` passing values at ``ref``), ``samples``
        pools the values each of those runs was the median of (its own value where it
        recorded one), and ``runs`` counts the runs recorded at ``ref``."""

        def work(conn: sqlite3.Connection) -> MetricsAt:
            at = {
                run_id
                for run_id, branch, tag, revision in conn.execute(
                    "SELECT id, branch, tag, revision FROM runs"
                )
                if ref in (branch, tag) or _commit_matches(ref, revision)
            }
            values: dict[str, dict[str, list[float]]] = {}
            samples: dict[str, dict[str, list[float]]] = {}
            if not at:
                return values, samples, 0
            wanted = None if nodeids is None else set(nodeids)
            rows = conn.execute(
                "SELECT t.nodeid, s.name, v.run_id, v.value, v.samples"
                " FROM metric_values AS v JOIN metric_series AS s ON s.id = v.series_id"
                " JOIN tests AS t ON t.id = s.test_id WHERE v.passed = 1"
                " ORDER BY s.id, v.run_id"
            )
            per_series: dict[tuple[str, str], list[tuple[float, list[float]]]] = {}
            for nodeid, name, run_id, value, pooled in rows:
                if run_id not in at or (wanted is not None and nodeid not in wanted):
                    continue
                kept = json.loads(pooled) if pooled else [value]
                per_series.setdefault((nodeid, name), []).append((float(value), kept))
            for (nodeid, name), points in per_series.items():
                recent = points[-window:]
                values.setdefault(nodeid, {})[name] = [v for v, _ in recent]
                samples.setdefault(nodeid, {})[name] = [float(x) for _, xs in recent for x in xs]
            return values, samples, len(at)

        empty: MetricsAt = ({}, {}, 0)
        return self._query(work, empty)

    def latest_metrics(self) -> dict[tuple[str, str], LatestMetric]:
        """Each series' newest recorded value, by ``(nodeid, metric)``."""

        def work(conn: sqlite3.Connection) -> dict[tuple[str, str], LatestMetric]:
            out: dict[tuple[str, str], LatestMetric] = {}
            for nodeid, name, better, gate, value, pooled, passed in conn.execute(
                "SELECT t.nodeid, s.name, s.higher_is_better, s.gate, v.value, v.samples,"
                " v.passed FROM metric_values AS v JOIN metric_series AS s"
                " ON s.id = v.series_id JOIN tests AS t ON t.id = s.test_id"
                " ORDER BY s.id, v.run_id"
            ):
                kept = json.loads(pooled) if pooled else [value]
                out[(nodeid, name)] = LatestMetric(
                    float(value), kept, bool(passed), bool(better), gate
                )
            return out

        return self._query(work, {})

    def metric_series(self) -> list[tuple[str, str]]:
        """Every recorded ``(nodeid, metric)``, sorted."""
        return self._query(
            lambda conn: conn.execute(
                "SELECT t.nodeid, s.name FROM tests AS t JOIN metric_series AS s"
                " ON s.test_id = t.id ORDER BY t.nodeid, s.name"
            ).fetchall(),
            [],
        )

    def run_count(self) -> int:
        """How many runs the store holds."""
        return self._query(lambda conn: conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0], 0)

    def runs(self, limit: int = 20) -> list[RunInfo]:
        """The newest ``limit`` runs, newest first."""

        def work(conn: sqlite3.Connection) -> list[RunInfo]:
            rows = conn.execute(
                "SELECT id, started, revision, wall, workers, tests, failed FROM runs"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            )
            return [RunInfo(*row) for row in rows]

        return self._query(work, [])

    def test_history(self, nodeid: str, limit: int = 30) -> TestHistory:
        """The test's last ``limit`` runs, with its metrics over those runs, oldest first."""

        def work(conn: sqlite3.Connection) -> TestHistory:
            rows = conn.execute(
                "SELECT r.run_id, r.outcome, r.duration, r.attempts, r.flaky"
                " FROM tests AS t JOIN results AS r ON r.test_id = t.id"
                " WHERE t.nodeid = ? ORDER BY r.run_id DESC LIMIT ?",
                (nodeid, limit),
            ).fetchall()
            runs = tuple(
                TestRun(run_id, outcome, duration, attempts, bool(flaky))
                for run_id, outcome, duration, attempts, flaky in reversed(rows)
            )
            if not runs:
                return TestHistory(nodeid)
            metrics: dict[str, list[MetricPoint]] = {}
            higher: dict[str, bool] = {}
            for name, better, run_id, value, passed in conn.execute(
                "SELECT s.name, s.higher_is_better, v.run_id, v.value, v.passed"
                " FROM tests AS t JOIN metric_series AS s ON s.test_id = t.id"
                " JOIN metric_values AS v ON v.series_id = s.id"
                " WHERE t.nodeid = ? AND v.run_id >= ? ORDER BY s.name, v.run_id",
                (nodeid, runs[0].run_id),
            ):
                metrics.setdefault(name, []).append(MetricPoint(run_id, value, bool(passed)))
                higher[name] = bool(better)
            return TestHistory(nodeid, runs, {k: tuple(v) for k, v in metrics.items()}, higher)

        return self._query(work, TestHistory(nodeid))

    def find_tests(self, pattern: str) -> list[str]:
        """``[pattern]`` when it is a recorded test id, else the ids containing it, sorted.

        Recording a run keeps a test only while a run it took part in is kept (see
        :meth:`_prune`), so every test the store names was recorded.
        """

        def work(conn: sqlite3.Connection) -> list[str]:
            exact = conn.execute("SELECT 1 FROM tests WHERE nodeid = ?", (pattern,))
            if exact.fetchone() is not None:
                return [pattern]
            rows = conn.execute(
                "SELECT nodeid FROM tests WHERE instr(nodeid, ?) > 0 ORDER BY nodeid", (pattern,)
            )
            return [nodeid for (nodeid,) in rows]

        return self._query(work, [])

    def slowest(self, top: int) -> list[SlowTest]:
        """The ``top`` tests by median duration over the recorded runs (skips left out)."""

        def work(conn: sqlite3.Connection) -> list[SlowTest]:
            # One pass over the results in the order they are stored, the median in Python:
            # SQL would sort every row of the table first (20,000 tests x 200 runs).
            durations: dict[int, array[float]] = {}
            for test_id, duration in conn.execute(
                "SELECT test_id, duration FROM results WHERE outcome != 'skipped'"
            ):
                per_test = durations.get(test_id)
                if per_test is None:
                    per_test = durations[test_id] = array("d")
                per_test.append(duration)
            found = [
                SlowTest(nodeid, median(durations[test_id]), len(durations[test_id]))
                for test_id, nodeid in conn.execute("SELECT id, nodeid FROM tests")
                if test_id in durations
            ]
            found.sort(key=lambda s: (-s.median_duration, s.nodeid))
            return found[:top]

        return self._query(work, [])

    def flakiest(self, top: int) -> list[FlakyTest]:
        """Tests with flaky or failed runs, the highest flake rate (then failure rate) first."""

        def work(conn: sqlite3.Connection) -> list[FlakyTest]:
            bad: dict[int, tuple[int, int]] = {
                test_id: (flaky, failed)
                for test_id, flaky, failed in conn.execute(_FLAKY_OR_FAILED)
            }
            if not bad:
                return []
            conn.execute("CREATE TEMP TABLE bad (test_id INTEGER PRIMARY KEY)")
            conn.executemany("INSERT INTO temp.bad VALUES (?)", ((t,) for t in bad))
            runs = dict(
                conn.execute(
                    "SELECT test_id, COUNT(*) FROM results"
                    " WHERE test_id IN (SELECT test_id FROM temp.bad) GROUP BY test_id"
                )
            )
            found = [
                FlakyTest(nodeid, bad[test_id][0], bad[test_id][1], runs[test_id])
                for test_id, nodeid in conn.execute("SELECT id, nodeid FROM tests")
                if test_id in bad
            ]
            found.sort(key=lambda t: (-t.flaky_runs / t.runs, -t.failed_runs / t.runs, t.nodeid))
            return found[:top]

        return self._query(work, [])

    def flake_candidates(self, window: int) -> dict[str, list[RunOfTest]]:
        """The last ``window`` runs (oldest first, with their commits) of every test that
        was flaky or failed in a recorded run: the only ones that can have flaked."""

        def work(conn: sqlite3.Connection) -> dict[str, list[RunOfTest]]:
            bad = {test_id for test_id, _, _ in conn.execute(_FLAKY_OR_FAILED)}
            if not bad:
                return {}
            # One pass over the results in the order they are stored (a query per test
            # would scan them once per test: the key leads with the run).
            commits = dict(conn.execute("SELECT id, revision FROM runs"))
            runs: dict[int, list[RunOfTest]] = {}
            for test_id, run_id, outcome, flaky in conn.execute(
                "SELECT test_id, run_id, outcome, flaky FROM results"
            ):
                if test_id in bad:
                    runs.setdefault(test_id, []).append(
                        RunOfTest(run_id, commits.get(run_id), outcome, bool(flaky))
                    )
            return {
                nodeid: sorted(runs[test_id], key=lambda r: r.run_id)[-window:]
                for test_id, nodeid in conn.execute("SELECT id, nodeid FROM tests")
                if test_id in runs
            }

        return self._query(work, {})

    def failure_messages(self, nodeid: str, run_ids: Collection[int]) -> list[str]:
        """The recorded failure messages of a test in these runs."""

        def work(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT m.run_id, m.message FROM failure_messages AS m"
                " JOIN tests AS t ON t.id = m.test_id WHERE t.nodeid = ? ORDER BY m.run_id",
                (nodeid,),
            )
            return [message for run_id, message in rows if run_id in run_ids]

        return self._query(work, [])

    def run_started(self, run_ids: Collection[int]) -> dict[int, float]:
        """When each of these runs started."""

        def work(conn: sqlite3.Connection) -> dict[int, float]:
            rows = conn.execute("SELECT id, started FROM runs")
            return {run_id: started for run_id, started in rows if run_id in run_ids}

        return self._query(work, {})


def _keep_results_by_run(conn: sqlite3.Connection) -> None:
    """Move a store's results from the layout kept by test to the one kept by run, once."""
    key = {row[1]: row[5] for row in conn.execute("PRAGMA table_info(results)")}
    if key.get("test_id") == 1:  # the first column of the old primary key
        for statement in _MIGRATE_BY_RUN.split(";"):
            conn.execute(statement)


@dataclass(frozen=True)
class _Run:
    """What :meth:`HistoryStore.record_run` writes, checked and without duplicates."""

    started: float
    commit: str | None
    wall: float | None
    workers: int | None
    results: list[TestResult]
    metrics: list[MetricRecord]
    failed: int
    branch: str | None = None
    tag: str | None = None


def _seconds(duration: float) -> float:
    # A clock oddity must not break the NOT NULL column (NaN is stored as NULL).
    return duration if math.isfinite(duration) and duration >= 0 else 0.0


def _commit_matches(ref: str, revision: str | None) -> bool:
    return (
        revision is not None
        and len(ref) >= 7
        and re.fullmatch(r"[0-9a-f]+", ref) is not None
        and revision.startswith(ref)
    )


def _git(root: Path, *args: str) -> str | None:
    """A git command's output at ``root``; None where it fails. Never raises."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=2.0,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    out = done.stdout.strip()
    return out if done.returncode == 0 and out else None


#: Where CI services name the branch a job runs for (their checkouts are detached).
BRANCH_VARIABLES = (
    "GITHUB_HEAD_REF",  # a pull request's branch
    "GITHUB_REF_NAME",
    "CI_COMMIT_BRANCH",  # GitLab
    "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
    "BUILDKITE_BRANCH",
    "BRANCH_NAME",  # Jenkins
    "GIT_BRANCH",
)


def current_branch(root: Path, env: Mapping[str, str]) -> str | None:
    """The branch checked out at ``root``, or the one the CI job says it runs for."""
    branch = _git(root, "symbolic-ref", "--quiet", "--short", "HEAD")
    if branch:
        return branch
    for name in BRANCH_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return value.removeprefix("origin/")
    return None


def current_tag(root: Path) -> str | None:
    """A tag that points at the commit checked out at ``root``, if there is one."""
    return _git(root, "describe", "--tags", "--exact-match", "HEAD")


def current_commit(root: Path) -> str | None:
    """The commit checked out at ``root``; None when that cannot be told. Never raises."""
    sha = _git(root, "rev-parse", "--verify", "--quiet", "HEAD")
    if sha is None or not re.fullmatch(r"[0-9a-f]{40}(?:[0-9a-f]{24})?", sha):
        return None
    return sha


# -- what `orchestrator history [TEST]` prints -------------------------------------------
def history_lines(
    store: HistoryStore, test: str | None = None, *, top: int = 10, window: int = BASELINE_WINDOW
) -> list[str]:
    """The report of ``orchestrator history``: the whole suite, or the one test matching ``test``.

    Raises :class:`OrchestratorError` when ``test`` matches no recorded test, or several.
    """
    count = store.run_count()
    if count == 0:
        return [
            f"no runs recorded yet in {store.path}; `orchestrator run` (or pytest with the "
            "orchestrator plugin) records each run"
        ]
    if test is None:
        return _overview(store, count, top)
    return _one_test(store, _resolve(store, test), window)


def _resolve(store: HistoryStore, test: str) -> str:
    matches = store.find_tests(test)
    if not matches:
        raise OrchestratorError(
            f"no test matching {test!r} in {store.path}; run `orchestrator run` first to "
            "record it, or check the test id (any part of it will do)"
        )
    if len(matches) > 1:
        shown = "\n".join(f"  {m}" for m in matches[:MAX_CANDIDATES])
        more = len(matches) - MAX_CANDIDATES
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise OrchestratorError(
            f"{len(matches)} tests match {test!r}:\n{shown}{tail}\n"
            "give a longer part of the test id to pick one"
        )
    return matches[0]


def _overview(store: HistoryStore, count: int, top: int) -> list[str]:
    lines = [f"{count} run(s) recorded in {store.path}", "last runs (newest first):"]
    for run in store.runs(RECENT_RUNS):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started))
        commit = run.commit[:8] if run.commit else "-"
        wall = format_duration(run.wall) if run.wall is not None else "-"
        workers = f"{run.workers} worker(s)" if run.workers is not None else "- workers"
        lines.append(
            f"  #{run.id:<4} {when}  {commit:<8}  wall {wall:>7}  {workers}  "
            f"{run.tests} tests  {run.failed} failed"
        )
    slowest = store.slowest(top)
    if slowest:
        lines.append(f"slowest tests (median duration; trend over the last {TREND_RUNS} runs):")
        for slow in slowest:
            trend = sparkline(store.test_history(slow.nodeid, TREND_RUNS).durations)
            lines.append(
                f"  {format_duration(slow.median_duration):>7}  {trend:<{TREND_RUNS}}  "
                f"{slow.nodeid}"
            )
    flakiest = store.flakiest(top)
    if flakiest:
        lines.append("flakiest tests:")
        for flaky in flakiest:
            lines.append(
                f"  {flaky.flaky_runs}/{flaky.runs} runs flaky, {flaky.failed_runs} failed  "
                f"{flaky.nodeid}"
            )
    else:
        lines.append("no flaky or failing tests in the recorded runs")
    series = store.metric_series()
    if series:
        shown = {nodeid for nodeid, _ in series[:top]}
        recent = store.metric_history(TREND_RUNS, shown)
        lines.append(f"metrics (latest value and trend over the last {TREND_RUNS} passing runs):")
        for nodeid, name in series[:top]:
            passing = recent.get(nodeid, {}).get(name, [])
            latest = fmt(passing[-1]) if passing else "- (no passing run)"
            lines.append(f"  {name} = {latest}  {sparkline(passing)}  {nodeid}")
        if len(series) > top:
            lines.append(
                f"  ... and {len(series) - top} more; `orchestrator history TEST` shows one test"
            )
    return lines


def _one_test(store: HistoryStore, nodeid: str, window: int) -> list[str]:
    history = store.test_history(nodeid, TREND_RUNS)
    n = len(history.runs)
    if n == 0:
        return [f"{nodeid}: no runs recorded yet in {store.path}"]
    durations = history.durations
    letters = "".join(
        FLAKY_LETTER if r.flaky else OUTCOME_LETTERS.get(r.outcome, "?") for r in history.runs
    )
    lines = [
        f"{nodeid}: last {n} run(s) in {store.path}",
        f"  duration  {sparkline(durations)}  min {format_duration(min(durations))}  "
        f"median {format_duration(median(durations))}  max {format_duration(max(durations))}  "
        f"latest {format_duration(durations[-1])}",
        f"  outcomes  {letters}  (oldest first: . passed  {FLAKY_LETTER} flaky  F failed  "
        "E error  s skipped  x xfailed  X xpassed)",
        f"  flaky in {history.flaky_runs}/{n} runs, failed in {history.failed_runs}/{n} runs",
    ]
    for name, points in sorted(history.metrics.items()):
        values = [p.value for p in points]
        passing = [p.value for p in points if p.passed][-window:]
        better = "higher" if history.higher_is_better.get(name, True) else "lower"
        latest = fmt(values[-1]) + ("" if points[-1].passed else " (test failed)")
        baseline = (
            f"{fmt(median(passing))} (median of the last {len(passing)} passing runs)"
            if passing
            else "none yet (no passing run)"
        )
        lines.append(f"  metric {name} ({better} is better)  {sparkline(values)}")
        lines.append(
            f"    latest {latest}  baseline {baseline}  "
            f"last: {', '.join(fmt(v) for v in values[-LAST_VALUES:])}"
        )
    return lines


__all__ = [
    "FlakyTest",
    "HistoryStore",
    "MetricPoint",
    "MetricRecord",
    "RunInfo",
    "SlowTest",
    "TestHistory",
    "TestResult",
    "TestRun",
    "current_commit",
    "history_lines",
]
