"""What a ``--ray`` run reads from its store, and what it records there at its end.

It reads the recorded durations and file entry costs (for the plan), the last collection
made with the same arguments (for a head start) and the metric history (for
``record_metric``'s baselines). It records the tests' durations, this collection, and the
run's outcomes and metrics (see orchestrator.store). A store that cannot be read or
written never fails the run: what is wrong is shown as an ``orchestrator:`` line.
"""

from __future__ import annotations

import os
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from orchestrator.config import RunOptions
from orchestrator.errors import OrchestratorError
from orchestrator.options import METRICS_BASELINE
from orchestrator.scheduling.head_start import LastCollection, collection_key, files_of, stamps
from orchestrator.scheduling.resources import DEFAULT
from orchestrator.store.durations import ENTRY_PREFIX, CollectionStore, DurationStore
from orchestrator.store.history import (
    HistoryStore,
    MetricRecord,
    TestResult,
    current_branch,
    current_commit,
    current_tag,
)
from pytest_orchestrator.metrics import Baselines, read_baselines
from pytest_orchestrator.pipelines import Pipelines
from pytest_orchestrator.terminal import Terminal


@contextmanager
def warnings_shown(terminal: Terminal) -> Iterator[None]:
    """Show the warnings raised inside the block (a store warns of records it cannot
    use) as ``orchestrator: warning: ...`` lines, once the block is over."""
    shown: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            shown = caught
            yield
    finally:
        for warning in shown:
            terminal.line(f"orchestrator: warning: {warning.message}", yellow=True)


class CollectionKey:
    """Whether a recorded collection may stand for this run's, and under which key."""

    def __init__(self, config: pytest.Config, options: RunOptions) -> None:
        self.config = config
        self.options = options
        self._key: str | None = None

    def allowed(self) -> bool:
        """Runs whose collection a recorded one can stand for: the workers generate tests
        lazily, and nothing but the files decides what is selected (not the last failures,
        nor a shard, whose split follows the recorded durations)."""
        config = self.config
        option = config.option
        return (
            self.options.head_start
            and not config.pluginmanager.has_plugin("orchestrator-shard")
            and config.getoption("ray_collect", "import") != "all"
            and not option.keepduplicates
            and not any("::" in str(arg) for arg in config.args)
            and not any(
                getattr(option, name, False)
                for name in ("lf", "failedfirst", "newfirst", "stepwise", "stepwise_skip")
            )
        )

    def key(self) -> str:
        """Taken once, before collection: conftest files may change options while they
        collect (scikit-learn's do), and the key must be the one the next run looks up."""
        if self._key is None:
            config = self.config
            self._key = collection_key(
                vars(config.option),
                [str(a) for a in config.args],
                str(config.invocation_params.dir),
                str(config.rootpath),
            )
        return self._key


@dataclass(frozen=True)
class RunFacts:
    """What the end of a run hands to :meth:`Records.record`."""

    #: The node ids the controller collected, and how long that took.
    collected: Sequence[str]
    collect_seconds: float
    #: Tests that ran more than once, with their attempt counts.
    attempts: Mapping[str, int]
    #: When the tests started, how long they ran, on how many workers.
    started: float
    wall: float
    workers: int


class Records:
    """The run's store, read while the run starts and written at its end."""

    def __init__(
        self,
        config: pytest.Config,
        options: RunOptions,
        pipelines: Pipelines,
        terminal: Terminal,
        key: CollectionKey,
    ) -> None:
        self.config = config
        self.store_path = options.store_path
        self.pipelines = pipelines
        self.terminal = terminal
        self.key = key
        self._durations: tuple[dict[str, float], dict[str, float]] | None = None

    # -- reading ---------------------------------------------------------------------
    def durations(self) -> tuple[dict[str, float], dict[str, float]]:
        """Recorded durations and file entry costs (read once)."""
        if self._durations is None:
            store = DurationStore(self.store_path)
            with warnings_shown(self.terminal):
                self._durations = (store.load(), store.entry_costs())
        return self._durations

    def last_collection(self) -> LastCollection | None:
        """What the last run with these arguments collected, if it was recorded."""
        with warnings_shown(self.terminal):
            try:
                return CollectionStore(self.store_path).load(self.key.key())
            except (OSError, OrchestratorError):
                return None

    def metric_baselines(self, nodeids: Sequence[str]) -> Baselines:
        """Metric history of these tests at ``--metrics-baseline``, for ``record_metric``
        on the workers; the run says so where that baseline has no recorded run."""
        window = self.pipelines.settings.metrics.window
        ref = str(self.config.getoption(METRICS_BASELINE.dest, None) or "last")
        with warnings_shown(self.terminal):
            try:
                found = read_baselines(self.store_path, window, ref, set(nodeids))
            except (OSError, OrchestratorError) as exc:
                self.terminal.line(f"orchestrator: metric history unavailable: {exc}", yellow=True)
                return Baselines()
        if found.note:
            self.terminal.line(f"orchestrator: {found.note}", yellow=True)
        return found

    # -- recording -------------------------------------------------------------------
    def record(
        self,
        durations: Mapping[str, float],
        learnt: Mapping[str, float],
        run: RunFacts,
    ) -> None:
        """Record the tests' ``durations`` and the file entry costs ``learnt``, what was
        collected (for the next run's head start), and the run's history."""
        try:
            # A shard's durations stay apart from those its split read (see
            # DurationStore.record), so that the split's other shards agree with it.
            sharded = self.config.pluginmanager.has_plugin("orchestrator-shard")
            DurationStore(self.store_path).record(
                {**durations, **{ENTRY_PREFIX + f: c for f, c in learnt.items()}},
                apart=sharded,
            )
            self._record_collection(run)
            self._record_history(run)
        except (OSError, OrchestratorError) as exc:
            self.terminal.line(
                f"orchestrator: could not save durations to {self.store_path}: {exc}",
                yellow=True,
            )

    def _record_collection(self, run: RunFacts) -> None:
        """What this run collected, for the next run's head start."""
        if not run.collected or not self.key.allowed():
            return
        config = self.config
        depends = [*files_of(run.collected), *conftest_files(config)]
        if config.inipath is not None:
            depends.append(str(config.inipath))
        pipelines = self.pipelines
        held_back = {n for n, need in pipelines.need_of.items() if need != DEFAULT}
        held_back.update(pipelines.metrics, pipelines.baselines)
        CollectionStore(self.store_path).save(
            self.key.key(),
            LastCollection(
                nodeids=tuple(run.collected),
                files=stamps(config.rootpath, depends),
                seconds=run.collect_seconds,
                held_back=frozenset(held_back & set(run.collected)),
            ),
        )

    def _record_history(self, run: RunFacts) -> None:
        """This run's outcomes and metrics, for trends, flake rates and metric baselines."""
        pipelines = self.pipelines
        results = [
            TestResult(
                nodeid=nodeid,
                outcome=outcome,
                duration=pipelines.seconds.get(nodeid, 0.0),
                attempts=run.attempts.get(nodeid, 1),
                flaky=nodeid in pipelines.flaky,
                kind=pipelines.kind_of.get(nodeid, "unit"),
                worker=pipelines.worker_of.get(nodeid),
                message=pipelines.message_of(nodeid),
            )
            for nodeid, outcome in pipelines.outcome.items()
        ]
        metrics = [
            MetricRecord(
                nodeid=nodeid,
                name=str(m["name"]),
                value=float(m["value"]),
                higher_is_better=bool(m.get("higher_is_better", True)),
                passed=pipelines.outcome.get(nodeid) == "passed",
                samples=tuple(float(v) for v in m.get("samples", ())),
                gate=m.get("gate"),
            )
            for nodeid, recorded in pipelines.metrics.items()
            for m in recorded
        ]
        HistoryStore(self.store_path).record_run(
            results,
            metrics,
            commit=current_commit(self.config.rootpath),
            branch=current_branch(self.config.rootpath, os.environ),
            tag=current_tag(self.config.rootpath),
            started=run.started,
            wall=run.wall,
            workers=run.workers,
        )


def conftest_files(config: pytest.Config) -> list[str]:
    """The conftest.py files pytest loaded (they can change what is collected)."""
    files = []
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None) if isinstance(plugin, types.ModuleType) else None
        if path and os.path.basename(path) == "conftest.py":
            files.append(path)
    return sorted(files)
