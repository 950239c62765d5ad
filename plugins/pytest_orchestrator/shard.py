"""``--shard K/N``: run this CI job's share of the suite, split by recorded durations.

Registered when ``--shard`` is given. After every other plugin has selected tests (``-k``,
``-m``, ``--kinds``), the remaining tests are split by :func:`orchestrator.sharding.split`
and those of other shards are deselected. Runs without ``--ray`` record their durations
too, so that ``orchestrator durations merge`` can give the next split all of them.

A shard run keeps the durations it records apart from those the split reads (see
``DurationStore.record``): the other shards of the same split, run later from the same
store (one after another in one checkout), then split the suite the same way.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.reports.progress import format_duration
from orchestrator.scheduling.sharding import Shard, split
from orchestrator.store.durations import DurationStore


class ShardPlugin:
    def __init__(self, shard: Shard, store_path: Path, *, record: bool) -> None:
        self.shard = shard
        self.store_path = store_path
        self.record = record
        self.summary = ""
        self.durations: dict[str, float] = defaultdict(float)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        store = DurationStore(self.store_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unusable store only makes the split coarser
            history = store.load()
            apart = store.apart()
        nodeids = [item.nodeid for item in items]
        result = split(nodeids, history, self.shard.total)
        mine = self.shard.index
        keep = [item for item, s in zip(items, result.shard_of, strict=True) if s == mine]
        others = [item for item, s in zip(items, result.shard_of, strict=True) if s != mine]
        if others:
            config.hook.pytest_deselected(items=others)
            items[:] = keep
        loads = result.loads
        self.summary = (
            f"orchestrator: shard {self.shard} ({self.shard.source}): {len(keep)} of "
            f"{len(nodeids)} tests, estimated {format_duration(loads[mine - 1])} "
            f"(shards {format_duration(min(loads))} to {format_duration(max(loads))}; "
            f"split {result.fingerprint}; {result.known} tests with recorded durations "
            f"in {self.store_path}{_waiting(apart)})"
        )

    def pytest_report_collectionfinish(self, config: pytest.Config) -> str:
        return self.summary

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.record:
            self.durations[report.nodeid] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not (self.record and self.durations):
            return
        try:
            DurationStore(self.store_path).record(self.durations, apart=True)
        except (OSError, OrchestratorError) as exc:
            tr = session.config.pluginmanager.get_plugin("terminalreporter")
            if tr is not None:
                tr.write_line(f"orchestrator: could not save durations: {exc}", yellow=True)


def _waiting(apart: int) -> str:
    if not apart:
        return ""
    return (
        f"; {apart} more from earlier shard runs wait for `orchestrator durations merge` "
        "or a run without --shard"
    )
