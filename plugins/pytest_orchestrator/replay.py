"""The controller's listener: the workers' results, replayed into the controller's pytest.

Reports arrive serialized from the workers and are replayed through pytest's own hooks
(``pytest_runtest_logstart``/``logreport``/``logfinish``), so the terminal,
``--junitxml``, ``--lf``/``--ff`` and other reporting plugins see an ordinary run. A test
whose worker died gets a made-up error report naming the worker; earlier attempts of a
retried test go into its JUnit record. The workers themselves reach plugins through
pytest-xdist's node hooks (:mod:`pytest_orchestrator.xdist_nodes`).
"""

from __future__ import annotations

import sys
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import pytest

from orchestrator.reports.junit import attempt_element
from orchestrator.reports.run_report import failure_message
from orchestrator.run.protocol import (
    PLAIN_KEY,
    ByeMessage,
    InitMessage,
    LogMessage,
    ReportData,
    WarningMessage,
)
from orchestrator.scheduling.retry import Attempt
from orchestrator.worker.gcpause import Freezer
from orchestrator.worker.live_log import show_live_log
from pytest_orchestrator.interrupts import Interrupts
from pytest_orchestrator.pipelines import Pipelines
from pytest_orchestrator.pytest_private import (
    PlainPassJunit,
    PlainPassReplay,
    PlainPassStep,
    append_to_junit_case,
    fast_hook_caller,
    item_node_id,
    plain_pass_junit,
    plain_pass_replay,
)
from pytest_orchestrator.terminal import Terminal
from pytest_orchestrator.xdist_nodes import Nodes

#: Results replayed between two freezes of what the controller keeps (see Freezer).
FREEZE_EVERY = 2_000


class Replay:
    """Implements the controller's :class:`~orchestrator.run.controller.Listener`."""

    def __init__(
        self,
        config: pytest.Config,
        pipelines: Pipelines,
        terminal: Terminal,
        nodes: Nodes,
        *,
        live_output: bool = False,
    ) -> None:
        self.config = config
        self.pipelines = pipelines
        self.terminal = terminal
        #: The workers as pytest-xdist's hooks show them to plugins.
        self.nodes = nodes
        #: With -s: what the workers print is shown as it comes.
        self.live_output = live_output
        #: The run's tests, in the plan's order (the controller names them by index).
        self.items: list[pytest.Item] = []
        #: Seconds each test's reports took, by node id.
        self.durations: dict[str, float] = defaultdict(float)
        #: Tests that ran more than once: how many times.
        self.attempts: dict[int, int] = {}
        #: Tests with a failed report (not an expected failure).
        self.failed: set[int] = set()
        #: Tests whose last attempt crashed or hung its worker.
        self.lost: set[int] = set()
        #: Tests that have their verdict.
        self.finished = 0
        #: Tests whose logstart was replayed and not their logfinish yet (a test that a
        #: plugin such as pytest-rerunfailures runs again starts and finishes again).
        self._open: set[int] = set()
        #: The hooks a test's replay calls, as fast callers while a batch is replayed.
        self._logstart: Any = None
        self._logreport: Any = None
        self._logfinish: Any = None
        #: In a batch, where pytest writes a JUnit report: its writer's part for tests
        #: that passed plainly, and the report hook without the writer, for them.
        self._junit: PlainPassJunit | None = None
        self._logreport_plain: Any = None
        #: In a batch, where every listener of those hooks is one whose workings are
        #: known: tests that passed plainly go to each directly.
        self._plain: PlainPassReplay | None = None
        self._hooks_for_batch(batch=False)
        self._freezer = Freezer(every=FREEZE_EVERY)
        #: Holds Ctrl-C and SIGTERM while a batch is replayed (installed by the session).
        self.interrupts = Interrupts()

    def _hooks_for_batch(self, batch: bool) -> None:
        hook = self.config.hook
        hooks: list[Any] = [
            hook.pytest_runtest_logstart,
            hook.pytest_runtest_logreport,
            hook.pytest_runtest_logfinish,
        ]
        self._junit = self._plain = None
        if batch:
            self._plain = plain_pass_replay(self.config, own_plain_pass_listeners(self.config))
            hooks = [fast_hook_caller(h) for h in hooks]
            junit = plain_pass_junit(self.config)
            logreport = hook.pytest_runtest_logreport
            if junit is not None and any(
                impl.plugin is junit.writer for impl in logreport.get_hookimpls()
            ):
                self._junit = junit
                self._logreport_plain = fast_hook_caller(logreport, without=junit.writer)
        self._logstart, self._logreport, self._logfinish = hooks

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """A batch of tests: pytest's hooks are called without pluggy's per-call checks
        and the terminal is flushed once, at the end; the progress line is drawn then."""
        with self.interrupts.held():  # Ctrl-C waits for the batch's end
            self._hooks_for_batch(batch=True)
            finished = self.finished
            try:
                with self.terminal.one_flush():
                    yield
            finally:
                self._hooks_for_batch(batch=False)
                self.terminal.draw()
                self._freezer.grew(self.finished - finished)

    # -- tests -----------------------------------------------------------------------
    def test_final(self, index: int, attempt: Attempt, earlier: Sequence[Attempt]) -> None:
        """Replay the final attempt of a test; earlier attempts go into its JUnit record."""
        reports = self._reports(index, attempt.reports)
        if attempt.lost is not None:
            self.lost.add(index)
            reports.extend(self._lost_reports(index, attempt.lost, reports))
        nodeid = self.items[index].nodeid
        if earlier:
            self.attempts[index] = len(earlier) + 1
            if not attempt.failed:
                self.pipelines.flaky.add(nodeid)
            self.pipelines.earlier[nodeid] = [attempt_facts(a) for a in earlier]
        if attempt.worker:
            self.pipelines.worker_of[nodeid] = attempt.worker
        plain = attempt.plain and not earlier and index not in self._open
        if plain and self._plain is not None and self._plain.record(nodeid, *reports):
            durations = self.durations
            for report in reports:
                durations[nodeid] += report.duration
            self.finished += 1
            return
        junit = self._junit
        if junit is not None and plain and not junit.is_open(reports[1]):
            for report in reports:
                self._replay(index, report, self._logreport_plain)
            junit.record(*reports)
        else:
            for report in reports:
                if report.when == "teardown" and earlier:
                    self._record_earlier(report, attempt, earlier)
                self._replay(index, report, self._logreport)
        if index in self._open:  # its reports ended without a teardown
            self._open.discard(index)
            item = self.items[index]
            self._logfinish(nodeid=item.nodeid, location=item.location)
        self.finished += 1

    def test_warning(self, worker: str, data: WarningMessage) -> None:
        category = warning_category(data["category"])
        text = data["message"]
        if category is UserWarning and not data["category"].endswith(".UserWarning"):
            text = f"{data['category']}: {text}"
        message = warnings.WarningMessage(
            message=category(text),
            category=category,
            filename=data["filename"],
            lineno=data["lineno"],
        )
        sent = data.get("location")
        location = tuple(sent) if sent else None
        self.config.hook.pytest_warning_recorded.call_historic(
            kwargs={
                "warning_message": message,
                "when": data["when"],
                "nodeid": data["nodeid"],
                "location": location,
            }
        )

    def should_stop(self) -> bool:
        session = self.items[0].session if self.items else None
        return bool(session and (session.shouldfail or session.shouldstop))

    def skip_unplaced(self, unplaced: dict[str, str]) -> None:
        """Report the tests no worker can run (node id -> why) as skipped, naming what is
        missing, and leave them out of :attr:`items`."""
        hook = self.config.hook
        keep = []
        for item in self.items:
            reason = unplaced.get(item.nodeid)
            if reason is None:
                keep.append(item)
                continue
            path, lineno, _ = item.location
            common = report_fields(item)
            skipped = (path, (lineno or 0) + 1, f"Skipped: {reason}")
            hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
            for report in (
                pytest.TestReport(outcome="skipped", longrepr=skipped, when="setup", **common),
                pytest.TestReport(outcome="passed", longrepr=None, when="teardown", **common),
            ):
                hook.pytest_runtest_logreport(report=report)
            hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        self.items = keep

    def _reports(self, index: int, datas: Sequence[ReportData]) -> list[pytest.TestReport]:
        """Rebuild a test's reports. A plain one is completed from the controller's copy
        of the test (its node id and keywords, as pytest's own reports take them) and
        takes its location from the worker (sent with the setup phase, else the first
        report's), or the item's."""
        item = self.items[index]
        reports: list[pytest.TestReport] = []
        keywords: dict[str, Literal[1]] | None = None
        node_id: Any = None
        for data in datas:
            if not data.get(PLAIN_KEY):
                reports.append(self._from_serializable(data))
                continue
            if keywords is None:
                keywords = {name: 1 for name in item.keywords}
                node_id = item_node_id(item)
            # (The item's location is worked out on first use: only where none came.)
            sent = data.get("location")
            location = tuple(sent) if sent else reports[0].location if reports else item.location
            reports.append(
                pytest.TestReport(
                    nodeid=node_id,
                    location=location,
                    keywords=keywords,
                    outcome="passed",
                    longrepr=None,
                    when=data["when"],
                    sections=[],
                    duration=data["duration"],
                    start=data["start"],
                    stop=data["stop"],
                    user_properties=[],
                    **data.get("extras", {}),
                )
            )
        return reports

    def _from_serializable(self, data: ReportData) -> pytest.TestReport:
        # JSON turned pytest's tuples into lists; skip reports and locations need tuples.
        for key in ("longrepr", "location"):
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        report: pytest.TestReport = self.config.hook.pytest_report_from_serializable(
            config=self.config, data=data
        )
        return report

    def _lost_reports(
        self, index: int, message: str, received: list[pytest.TestReport]
    ) -> list[pytest.TestReport]:
        """An error for a test whose worker died (or that timed out) during it."""
        item = self.items[index]
        setup_seen = any(r.when == "setup" for r in received)
        when: Literal["setup", "teardown"] = "teardown" if setup_seen else "setup"
        common = report_fields(item)
        out = [pytest.TestReport(outcome="failed", longrepr=message, when=when, **common)]
        if when == "setup":
            out.append(
                pytest.TestReport(outcome="passed", longrepr=None, when="teardown", **common)
            )
        return out

    def _record_earlier(
        self, report: pytest.TestReport, attempt: Attempt, earlier: Sequence[Attempt]
    ) -> None:
        append_to_junit_case(
            self.config,
            report,
            (attempt_element(previous, final_failed=attempt.failed) for previous in earlier),
        )

    def _replay(self, index: int, report: pytest.TestReport, logreport: Any) -> None:
        nodeid = self.items[index].nodeid
        if index not in self._open:
            self._open.add(index)
            self._logstart(nodeid=nodeid, location=report.location)
        self.durations[nodeid] += report.duration
        if report.failed and not hasattr(report, "wasxfail"):
            self.failed.add(index)
        logreport(report=report)
        if report.when == "teardown":
            self._open.discard(index)
            self._logfinish(nodeid=nodeid, location=report.location)

    # -- the workers, as pytest-xdist's hooks and the terminal show them ---------------
    def worker_starting(self, init: InitMessage) -> None:
        if self.live_output:
            init["live"] = True
        self.nodes.configure(init)

    def worker_ready(self, worker: str) -> None:
        self.nodes.ready(worker)

    def worker_down(self, worker: str, error: str | None, bye: ByeMessage | None) -> None:
        if error and not self.nodes.was_ready(worker):
            # No test's report will say it: a worker lost while it started (it is replaced).
            self.terminal.line(f"orchestrator: worker {worker} {error}", yellow=True)
        self.nodes.down(worker, error, bye)

    def worker_output(self, worker: str, text: str) -> None:
        self.terminal.line(f"[{worker}] {text}")

    def worker_log(self, worker: str, message: LogMessage) -> None:
        show_live_log(self.config, message)


def own_plain_pass_listeners(config: pytest.Config) -> list[tuple[object, PlainPassStep]]:
    """The orchestrator's own plugins registered in the run that record a test that
    passed plainly themselves (a ``plain_pass(nodeid, setup, call, teardown)`` doing
    what their report hook would), for :func:`plain_pass_replay`."""
    manager = getattr(config, "pluginmanager", None)
    return [
        (plugin, plugin.plain_pass)
        for plugin in (manager.get_plugins() if manager is not None else ())
        if type(plugin).__module__.startswith("pytest_orchestrator.")
        and callable(getattr(plugin, "plain_pass", None))
    ]


def attempt_facts(attempt: Attempt) -> dict[str, Any]:
    """An earlier attempt, as the JSON and HTML reports show it."""
    starts = [r["start"] for r in attempt.reports if isinstance(r.get("start"), float)]
    stops = [r["stop"] for r in attempt.reports if isinstance(r.get("stop"), float)]
    text = attempt.error_text
    return {
        "worker": attempt.worker,
        "outcome": "error" if attempt.is_error else "failed",
        "message": failure_message(text),
        "start": min(starts) if starts else None,
        "stop": max(stops) if stops else None,
    }


def report_fields(item: pytest.Item) -> dict[str, Any]:
    """The fields of a report the controller makes up itself (a skip, a lost test)."""
    return {
        "nodeid": item.nodeid,
        "location": item.location,
        "keywords": {name: 1 for name in item.keywords},
        "sections": [],
        "duration": 0.0,
        "user_properties": [],
    }


def warning_category(qualified: str) -> type[Warning]:
    """The warning class named ``module.Name`` if its module is loaded, else UserWarning."""
    module_name, _, name = qualified.rpartition(".")
    module = sys.modules.get(module_name)
    candidate = getattr(module, name, None) if module is not None else None
    if isinstance(candidate, type) and issubclass(candidate, Warning):
        return candidate
    return UserWarning
