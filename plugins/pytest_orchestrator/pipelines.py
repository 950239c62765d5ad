"""Test kinds and pipelines on the controller: classify, select, count, report.

Registered for ``--ray`` runs and whenever ``--kinds`` or ``--junit-pipelines`` is
given. Everything here listens to pytest's ordinary hooks, so it works the same for
reports replayed from Ray workers and for a plain pytest run.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import UsageError
from orchestrator.pipelines.kinds import KINDS, PIPELINES, classify, pipeline_of
from orchestrator.pipelines.metrics import fmt, median
from orchestrator.reports.junit_kinds import TestFacts, regroup
from orchestrator.reports.progress import format_duration
from orchestrator.reports.run_report import failure_message
from orchestrator.scheduling.planner import junit_key
from orchestrator.scheduling.resources import Resources
from orchestrator.settings import Settings
from pytest_orchestrator.pytest_private import TerminalReporter, junit_report_path

#: Outcome columns of the per-kind table, in order.
COLUMNS = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def pipeline_paths(pattern: str | None) -> dict[str, Path]:
    """``--junit-pipelines``: a path with ``{pipeline}`` in it, or a directory."""
    if not pattern:
        return {}
    if "{pipeline}" not in pattern:
        pattern = str(Path(pattern) / "junit-{pipeline}.xml")
    return {p: Path(pattern.replace("{pipeline}", p)) for p in PIPELINES}


class Pipelines:
    """Kinds, needs and outcomes of the collected tests."""

    def __init__(
        self,
        config: pytest.Config,
        settings: Settings,
        selected: frozenset[str] | None,
        pipeline_files: dict[str, Path],
    ) -> None:
        self.config = config
        self.settings = settings
        self.selected = selected
        self.pipeline_files = pipeline_files
        self.kind_of: dict[str, str] = {}
        self.need_of: dict[str, Resources] = {}
        self.outcome: dict[str, str] = {}
        self.seconds: dict[str, float] = defaultdict(float)
        self.worker_of: dict[str, str] = {}
        self.flaky: set[str] = set()
        #: The first failure's message of each test that failed.
        self.message: dict[str, str] = {}
        self.metrics: dict[str, list[dict[str, Any]]] = {}
        #: Earlier attempts of retried tests (worker, outcome, message, start, stop).
        self.earlier: dict[str, list[dict[str, Any]]] = {}
        self._written: list[Path] = []
        #: Earlier passing values of each test's metrics, when the run loaded them.
        self.baselines: dict[str, dict[str, list[float]]] = {}
        #: Where the baselines come from: "last", or the --metrics-baseline ref.
        self.baseline_ref = "last"

    # -- collection ------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        kept, dropped = [], []
        for item in items:
            kind = classify(
                item.nodeid, (m.name for m in item.iter_markers()), self.settings.kind_rules
            )
            if self.selected is not None and kind not in self.selected:
                dropped.append(item)
                continue
            self.kind_of[item.nodeid] = kind
            self.need_of[item.nodeid] = self._need(item, kind)
            kept.append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept

    def _need(self, item: pytest.Item, kind: str) -> Resources:
        need = self.settings.resources_of(kind)
        marker = item.get_closest_marker("resources")
        if marker is None:
            return need
        if marker.args:
            raise pytest.UsageError(
                f"{item.nodeid}: the resources marker takes keywords only, "
                'for example @pytest.mark.resources(gpus=1, cpus=2, memory="8GiB")'
            )
        try:
            return need.merged(marker.kwargs, f"{item.nodeid}: resources marker")
        except UsageError as exc:
            raise pytest.UsageError(str(exc)) from None

    # -- outcomes --------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid
        self.seconds[nodeid] += report.duration
        when = report.when
        if report.failed and nodeid not in self.message:
            self.message[nodeid] = failure_message(report.longreprtext)
        if when == "call":
            if hasattr(report, "wasxfail"):
                self.outcome[nodeid] = "xfailed" if report.skipped else "xpassed"
            else:
                self.outcome[nodeid] = report.outcome
            metrics = getattr(report, "metrics", None)
            if metrics:
                self.metrics[nodeid] = list(metrics)
        elif report.outcome == "passed":  # a setup or teardown: most are
            return
        elif when == "setup":
            if report.failed:
                self.outcome[nodeid] = "error"
            elif report.skipped:
                self.outcome[nodeid] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        elif report.failed and self.outcome.get(nodeid) in (None, "passed"):
            self.outcome[nodeid] = "error"

    def plain_pass(
        self,
        nodeid: str,
        setup: pytest.TestReport,
        call: pytest.TestReport,
        teardown: pytest.TestReport,
    ) -> None:
        """What :meth:`pytest_runtest_logreport` does with the three reports of a test
        that passed plainly (no metrics), for the controller's replay."""
        seconds = self.seconds
        for report in (setup, call, teardown):
            seconds[nodeid] += report.duration
        self.outcome[nodeid] = "passed"

    def message_of(self, nodeid: str) -> str | None:
        """What went wrong with a test: its failure's message, or for a flaky test, its
        first failed attempt's."""
        if nodeid in self.message:
            return self.message[nodeid]
        earlier = self.earlier.get(nodeid)
        return str(earlier[0].get("message") or "") or None if earlier else None

    def rows(self) -> list[tuple[str, Counter[str], float, int]]:
        """Per kind that ran: outcome counts, summed seconds, flaky tests."""
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        seconds: dict[str, float] = defaultdict(float)
        flaky: Counter[str] = Counter()
        for nodeid, outcome in self.outcome.items():
            kind = self.kind_of.get(nodeid, "unit")
            counts[kind][outcome] += 1
            seconds[kind] += self.seconds.get(nodeid, 0.0)
            flaky[kind] += nodeid in self.flaky
        return [(k, counts[k], seconds[k], flaky[k]) for k in KINDS if counts.get(k)]

    def summary_lines(self) -> list[str]:
        rows = self.rows()
        if not rows:
            return []
        head = f"{'kind':<18} {'pipeline':<8} {'tests':>6}" + "".join(f" {c:>7}" for c in COLUMNS)
        lines = [head + f" {'flaky':>6} {'time':>9}"]
        for kind, counts, seconds, flaky in rows:
            lines.append(
                f"{kind:<18} {pipeline_of(kind):<8} {sum(counts.values()):>6}"
                + "".join(f" {counts.get(c, 0):>7}" for c in COLUMNS)
                + f" {flaky:>6} {format_duration(seconds):>9}"
            )
        return lines

    def pytest_terminal_summary(self, terminalreporter: TerminalReporter) -> None:
        lines = self.summary_lines()
        if lines:
            terminalreporter.write_sep("=", "tests by kind")
            for line in lines:
                terminalreporter.write_line(line)
        metric_lines = self.metric_lines()
        if metric_lines:
            terminalreporter.write_sep("=", "model metrics")
            for line in metric_lines:
                terminalreporter.write_line(line)
        for path in self._written:
            pipeline = next(p for p, f in self.pipeline_files.items() if f == path)
            terminalreporter.write_sep("-", f"generated {pipeline} pipeline xml file: {path}")

    def metric_lines(self) -> list[str]:
        """Each recorded metric, with its baseline when there is history."""
        window = self.settings.metrics.window
        lines = []
        for nodeid in sorted(self.metrics):
            for metric in self.metrics[nodeid]:
                name, value = str(metric["name"]), float(metric["value"])
                text = f"{name} = {fmt(value)}"
                history = self.baselines.get(nodeid, {}).get(name, [])[-window:]
                if history:
                    base = median(history)
                    change = f" ({(value - base) / abs(base):+.1%})" if base else ""
                    at = "" if self.baseline_ref == "last" else f" at {self.baseline_ref}"
                    text += f", baseline{at} {fmt(base)}{change}"
                lines.append(f"{text:<44} {nodeid}")
        return lines

    # -- JUnit -----------------------------------------------------------------------
    def facts(self, nodeid: str) -> TestFacts:
        metrics = [(m["name"], float(m["value"])) for m in self.metrics.get(nodeid, ())]
        return TestFacts(
            nodeid=nodeid,
            kind=self.kind_of.get(nodeid, "unit"),
            worker=self.worker_of.get(nodeid),
            metrics=metrics,
        )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        report = junit_report_path(self.config)
        if report is None or not report.is_file():
            return
        prefix = self.config.option.junitprefix
        by_key = {junit_key(nodeid): nodeid for nodeid in self.kind_of}

        def facts_of(case: ET.Element) -> TestFacts | None:
            classname = case.get("classname", "")
            if prefix and classname.startswith(prefix + "."):
                classname = classname[len(prefix) + 1 :]
            nodeid = by_key.get(f"junit:{classname}::{case.get('name', '')}")
            return self.facts(nodeid) if nodeid is not None else None

        self._written = regroup(report, facts_of, pipeline_files=self.pipeline_files)
