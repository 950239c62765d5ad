"""``--report-json`` and ``--report-html`` (``orchestrator run --json/--html``).

Listens to pytest's ordinary report hooks, so a plain run, a pytest-xdist run and a ``--ray``
run (whose reports are replayed on the controller) are reported alike. The files are
written when the session finishes, after the duration and history stores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.reports.atomic import write_text_atomically
from orchestrator.reports.html_report import render
from orchestrator.reports.run_report import (
    TestRecord,
    build,
    failure_message,
    flake_series,
    metric_entries,
    to_json,
)
from pytest_orchestrator.pipelines import Pipelines
from pytest_orchestrator.pytest_private import TerminalReporter


class ReportsPlugin:
    def __init__(
        self,
        config: pytest.Config,
        pipelines: Pipelines,
        *,
        json_path: Path | None,
        html_path: Path | None,
        store_path: Path,
    ) -> None:
        self.config = config
        self.pipelines = pipelines
        self.json_path = json_path
        self.html_path = html_path
        self.store_path = store_path
        self.started = time.time()
        self.spans: dict[str, list[float]] = {}
        self.texts: dict[str, list[str]] = {}
        self.xdist_worker: dict[str, str] = {}
        self.written: list[str] = []

    def pytest_sessionstart(self) -> None:
        self.started = time.time()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid
        start, stop = getattr(report, "start", None), getattr(report, "stop", None)
        if start is not None and stop is not None:
            span = self.spans.get(nodeid)
            if span is None or report.when == "setup":  # a retried test: its last attempt
                self.spans[nodeid] = [start, stop]
            else:
                span[1] = max(span[1], stop)
        if report.failed or (report.skipped and report.when != "teardown"):
            text = report.longreprtext
            if report.skipped and isinstance(report.longrepr, tuple):
                text = str(report.longrepr[2])
            if text:
                self.texts.setdefault(nodeid, []).append(text)
        node = getattr(report, "node", None)  # a pytest-xdist worker
        gateway = getattr(node, "gateway", None)
        if gateway is not None:
            self.xdist_worker[nodeid] = str(gateway.id)

    def plain_pass(
        self,
        nodeid: str,
        setup: pytest.TestReport,
        call: pytest.TestReport,
        teardown: pytest.TestReport,
    ) -> None:
        """What :meth:`pytest_runtest_logreport` does with the three reports of a test
        that passed plainly (timed, nothing to show), for the controller's replay."""
        self.spans[nodeid] = [setup.start, max(setup.stop, call.stop, teardown.stop)]

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        report = self._report(int(exitstatus))
        if self.json_path is not None:
            write_text_atomically(self.json_path, to_json(report))
            self.written.append(f"JSON report: {self.json_path}")
        if self.html_path is not None:
            write_text_atomically(self.html_path, render(report))
            self.written.append(f"HTML report: {self.html_path}")

    def pytest_terminal_summary(self, terminalreporter: TerminalReporter) -> None:
        for line in self.written:
            terminalreporter.write_sep("-", f"generated {line}")

    def _report(self, exit_status: int) -> dict[str, Any]:
        pipelines = self.pipelines
        session = self.config.pluginmanager.get_plugin("orchestrator-session")
        history = self._metric_history()
        window = pipelines.settings.metrics.window
        records = []
        for nodeid, outcome in pipelines.outcome.items():
            texts = self.texts.get(nodeid, [])
            span = self.spans.get(nodeid)
            earlier = pipelines.earlier.get(nodeid, [])
            worker = pipelines.worker_of.get(nodeid) or self.xdist_worker.get(nodeid)
            records.append(
                TestRecord(
                    nodeid=nodeid,
                    kind=pipelines.kind_of.get(nodeid, "unit"),
                    outcome=outcome,
                    duration=pipelines.seconds.get(nodeid, 0.0),
                    worker=worker or ("main" if session is None else None),
                    start=span[0] if span else None,
                    stop=span[1] if span else None,
                    attempts=len(earlier) + 1,
                    flaky=nodeid in pipelines.flaky,
                    message=failure_message(texts[-1]) if texts else None,
                    longrepr="\n\n".join(texts) if texts else None,
                    earlier=earlier,
                    metrics=metric_entries(
                        pipelines.metrics.get(nodeid, ()), history.get(nodeid, {}), window
                    ),
                )
            )
        stats = getattr(session, "stats", None)
        return build(
            records,
            command=[str(a) for a in self.config.invocation_params.args],
            rootdir=str(self.config.rootpath),
            where=getattr(session, "where", None) or None,
            workers=getattr(session, "workers", 0) or len({r.worker for r in records}) or 1,
            wall=time.time() - self.started,
            started=self.started,
            exit_status=exit_status,
            lost_workers=list(getattr(stats, "lost", ())),
            recycled_workers=list(getattr(stats, "recycled", ())),
            flake_history=self._flake_history(),
            metrics_baseline=self.pipelines.baseline_ref,
        )

    def _flake_history(self) -> list[dict[str, Any]]:
        """The tests that flaked in their recorded runs, with their rate over time (read
        only; nothing when there is no store)."""
        if not self.store_path.exists():
            return []
        from orchestrator.pipelines.flaky import flaked_runs
        from orchestrator.reports.flaky_list import find_flaky
        from orchestrator.store.history import HistoryStore

        settings = self.pipelines.settings
        quarantine = self.config.pluginmanager.get_plugin("orchestrator-quarantine")
        active = getattr(quarantine, "entries", {})
        try:
            history = HistoryStore(self.store_path)
            candidates = history.flake_candidates(settings.flake_policy.window)
            found = find_flaky(history, settings.flake_policy, candidates)
        except Exception:  # a report never fails for want of history
            return []
        out = []
        for test in found:
            runs = candidates.get(test.nodeid, [])
            entry = active.get(test.nodeid)
            out.append(
                {
                    "nodeid": test.nodeid,
                    "rate": test.rate,
                    "flaked": test.flaked,
                    "runs": test.runs,
                    "series": flake_series([r.run_id for r in runs], flaked_runs(runs)),
                    "quarantined": entry.describe() if entry is not None else None,
                }
            )
        return out

    def _metric_history(self) -> dict[str, dict[str, list[float]]]:
        """Earlier passing values of the recorded metrics: those the run loaded, else the
        history store's (read only; a plain run does not record itself)."""
        if self.pipelines.baselines or not self.pipelines.metrics:
            return self.pipelines.baselines
        from orchestrator.store.history import HistoryStore

        try:
            return HistoryStore(self.store_path).metric_history(
                self.pipelines.settings.metrics.window, list(self.pipelines.metrics)
            )
        except Exception:  # a report never fails for want of history
            return {}
