"""The controller side of ``pytest --ray``: plan, run on Ray, replay reports into pytest.

Reports arrive serialized from the workers and are replayed through pytest's own hooks
(``pytest_runtest_logstart``/``logreport``/``logfinish``), so the terminal, ``--junitxml``,
``--lf``/``--ff`` and other reporting plugins see an ordinary run.
"""

from __future__ import annotations

import gc
import math
import os
import signal
import sys
import time
import types
import uuid
import warnings
from collections import defaultdict
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pytest
from _pytest.junitxml import xml_key
from _pytest.terminal import TerminalReporter

from orchestrator.cluster.ray_start import resolve_auto
from orchestrator.cluster.shipping import needs_shipping, plan_shipment
from orchestrator.config import (
    WORKER_STARTUP_SECONDS,
    RunOptions,
    available_cpus,
    thread_env,
)
from orchestrator.errors import OrchestratorError, UsageError
from orchestrator.reports.junit import attempt_element
from orchestrator.reports.progress import eta_seconds, progress_line, summary_lines
from orchestrator.reports.run_report import failure_message
from orchestrator.run.controller import Controller, RunStats, worker_init
from orchestrator.run.executor import ClusterInfo
from orchestrator.run.protocol import Message
from orchestrator.scheduling.head_start import (
    Given,
    HeadStart,
    LastCollection,
    collection_key,
    files_of,
    match,
    plan_head_start,
    stamps,
    unchanged,
)
from orchestrator.scheduling.planner import Plan, auto_workers, make_plan
from orchestrator.scheduling.resources import DEFAULT, Resources, missing, shape_workers
from orchestrator.scheduling.retry import Attempt, RetryPolicy, compile_pattern
from orchestrator.store.durations import ENTRY_PREFIX, CollectionStore, DurationStore
from orchestrator.store.history import HistoryStore, MetricRecord, TestResult, current_commit
from orchestrator.worker.gcpause import paused_gc
from orchestrator.worker.live_log import show_live_log
from pytest_orchestrator.groups import fixture_group
from pytest_orchestrator.metrics import WORKERINPUT_KEY
from pytest_orchestrator.pipelines import Pipelines
from pytest_orchestrator.terminal import Terminal
from pytest_orchestrator.xdist_nodes import Nodes

if TYPE_CHECKING:
    from orchestrator.cluster.ray_executor import RayExecutor

SLOWEST_SHOWN = 5
#: Seconds the controller waits past a limit that pytest-timeout enforces in the worker.
TIMEOUT_GRACE = 5.0
#: Workers started before collection when their number is left to us (``auto``); more are
#: started after planning if the suite can use them, and those it cannot are closed.
EARLY_WORKERS_MAX = 32


@dataclass
class _EarlyStart:
    """The cluster connection made, and the default workers started, before collection."""

    executor: RayExecutor
    info: ClusterInfo
    launched: list[str]
    #: The tests the workers were given before the controller collected, if any.
    head_start: HeadStart | None = None
    #: The early workers holding the head start's guesses, in launch order.
    guessing: tuple[str, ...] = ()


class RaySession:
    """Registered as a plugin on the controller when ``--ray`` is given."""

    def __init__(self, config: pytest.Config, options: RunOptions, pipelines: Pipelines) -> None:
        self.config = config
        self.options = options
        self.pipelines = pipelines
        self.items: list[pytest.Item] = []
        self.plan: Plan | None = None
        self.controller: Controller | None = None
        self.stats: RunStats | None = None
        self.where = ""
        self.workers = 0
        self.durations: dict[str, float] = defaultdict(float)
        #: Tests whose logstart was replayed and not their logfinish yet (a test that a
        #: plugin such as pytest-rerunfailures runs again starts and finishes again).
        self._open: set[int] = set()
        self._attempts: dict[int, int] = {}
        self._failed: set[int] = set()
        #: Tests whose last attempt crashed or hung its worker.
        self._lost: set[int] = set()
        self._finished = 0
        self._keywords: dict[int, dict[str, Literal[1]]] = {}
        #: When the tests started: the collection's end, or the head start's dispatch.
        self._t0 = 0.0
        self._t_collected = 0.0
        self._t_head_start: float | None = None
        self._t_loop_end = 0.0
        #: Tests skipped because no node could meet their needs, with the reason.
        self.unplaced: dict[str, str] = {}
        self.terminal = Terminal(config)
        self.testrunuid = uuid.uuid4().hex
        #: The workers as pytest-xdist's hooks show them to plugins.
        self.nodes = Nodes(config, self.testrunuid)
        #: With -s: what the workers print is shown as it comes.
        self.live_output = config.option.capture == "no"
        #: With --pdb: the first failing test runs again here, under the debugger.
        self.debug = bool(config.getoption("usepdb", False))
        #: The cluster connection and the workers started while the suite was collected.
        self._early: _EarlyStart | None = None
        #: The executor whose Ray connection is being closed.
        self._closing: RayExecutor | None = None
        #: Recorded durations and file entry costs, loaded once per run.
        self._recorded: tuple[dict[str, float], dict[str, float]] | None = None
        #: Seconds the controller spent collecting, and the node ids it collected.
        self._collect_seconds = 0.0
        self._collected: list[str] = []
        self._key: str | None = None

    # -- the run ---------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> Generator[None, object, object]:
        """Connect to Ray and start the workers before collecting: they collect the suite
        while the controller does, instead of after it."""
        if self._head_start_allowed():
            self._collection_key()  # before collection changes anything
        if not session.config.option.collectonly:
            try:
                self._early = self._launch()
            except OrchestratorError as exc:
                raise pytest.UsageError(str(exc)) from None
        start = time.perf_counter()
        try:
            with paused_gc():
                return (yield)
        finally:
            self._collect_seconds = time.perf_counter() - start

    def _launch(self) -> _EarlyStart:
        from orchestrator.cluster.ray_executor import RayExecutor

        shipment = None
        if needs_shipping(self.options.files, resolve_auto(self.options.address, os.environ)):
            shipment = plan_shipment(
                self.config.rootpath, self.config.invocation_params.dir, self.options.excludes
            )
            self.terminal.line(f"orchestrator: shipping the project: {shipment.describe()}")
        executor = RayExecutor(self.options.address, shipment)
        try:
            if self.options.address:
                info = executor.connect(local_cpus=0)
                count = min(self.options.workers or EARLY_WORKERS_MAX, max(1, info.cpus))
            else:
                count = self.options.workers or min(available_cpus(), EARLY_WORKERS_MAX)
                info = executor.connect(local_cpus=max(count, available_cpus()))
            env = dict(os.environ)
            env.update(thread_env(os.environ, available_cpus(), count))
            inits = [
                worker_init(
                    f"gw{i}",
                    args=self._args(),
                    workercount=count,
                    testrunuid=self.testrunuid,
                    basetemp=self._basetemp(),
                    recycle=self.options.recycle,
                )
                for i in range(count)
            ]
            for init in inits:
                self.worker_starting(init)
            head_start = self._head_start(count, info)
            if head_start is not None:
                for init in inits:
                    init["nodeids"] = list(head_start.nodeids)
                    init["guessed"] = len(head_start.nodeids)
            executor.launch(inits, env, self._cwd())
            guessing = tuple(init["worker"] for init in inits) if head_start else ()
            if head_start is not None:
                for worker, batches, asks in zip(
                    guessing, head_start.batches, head_start.ask_at, strict=False
                ):
                    executor.send(
                        worker,
                        [{"t": "run", "i": b, "a": a} for b, a in zip(batches, asks, strict=True)],
                    )
                executor.dispatch()
                self._t_head_start = time.time()
        except BaseException:
            executor.shutdown(graceful=False)
            raise
        return _EarlyStart(executor, info, [init["worker"] for init in inits], head_start, guessing)

    def _head_start_allowed(self) -> bool:
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

    def _collection_key(self) -> str:
        """Taken once, before collection: conftest files may change options while they
        collect (scikit-learn's do), and the key must be the one the next run looks up."""
        if self._key is None:
            config = self.config
            self._key = collection_key(
                vars(config.option),
                [str(a) for a in config.args],
                self._cwd(),
                str(config.rootpath),
            )
        return self._key

    def _head_start(self, count: int, info: ClusterInfo) -> HeadStart | None:
        """The early workers' first batches, from what the last run with these arguments
        collected, when none of its files changed since (see orchestrator.scheduling.head_start)."""
        if not self._head_start_allowed():
            return None
        durations, entry_costs = self._load_recorded()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                last = CollectionStore(self.options.store_path).load(self._collection_key())
            except (OSError, OrchestratorError):
                last = None
        for w in caught:
            self.terminal.line(f"orchestrator: warning: {w.message}", yellow=True)
        if last is None or not unchanged(last, self.config.rootpath):
            return None
        workers = self.options.workers
        if workers is None:
            cpus = max(1, info.cpus) if self.options.address else available_cpus()
            workers = auto_workers(make_plan(last.nodeids, durations), cpus, WORKER_STARTUP_SECONDS)
        return plan_head_start(last, durations, min(count, workers), entry_costs=entry_costs)

    def _load_recorded(self) -> tuple[dict[str, float], dict[str, float]]:
        """Recorded durations and file entry costs (read once; warnings shown)."""
        if self._recorded is None:
            store = DurationStore(self.options.store_path)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._recorded = (store.load(), store.entry_costs())
            for w in caught:
                self.terminal.line(f"orchestrator: warning: {w.message}", yellow=True)
        return self._recorded

    def _release(self) -> None:
        """Stop the workers and start closing the connection (safe to call again): Ray
        disconnects while the reports are written, and is done by the end of the run
        (:meth:`pytest_unconfigure`)."""
        if self._early is not None:
            self._closing = self._early.executor
            self._early = None
            self._closing.shutdown(wait=False)

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._closing is not None:
            self._closing.wait_closed()
            self._closing = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            self._release()
            count = session.testsfailed
            raise session.Interrupted(f"{count} error{'s' if count != 1 else ''} during collection")
        if session.config.option.collectonly or not session.items:
            self._release()
            return True
        self.items = list(session.items)
        self._collected = [item.nodeid for item in self.items]
        self._t_collected = time.time()
        self._t0 = self._t_head_start or self._t_collected
        # What collection built lives as long as the session: keep the cyclic garbage
        # collector from walking it again and again while the reports come in.
        gc.freeze()
        try:
            self._run()
        except OrchestratorError as exc:
            raise pytest.UsageError(str(exc)) from None
        finally:
            self._release()
            self._t_loop_end = time.time()
            gc.freeze()
        if self.debug:
            self._debug_first_failure()
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        return True

    def _debug_first_failure(self) -> None:
        """``--pdb``: run the first test that failed (in collection order) again in this
        process, where the debugger has a terminal; its reports are not counted again.
        Tests whose worker crashed or timed out are left alone: they could take this
        process down too."""
        failed = sorted(self._failed - self._lost)
        if not failed:
            if self._failed:
                self.terminal.line(
                    "orchestrator: --pdb: every failing test crashed or hung its worker; "
                    "not running one here",
                    yellow=True,
                )
            return
        from _pytest.runner import runtestprotocol

        item = self.items[failed[0]]
        self.terminal.line(
            f"orchestrator: --pdb: running {item.nodeid} again in this process, under the debugger",
            yellow=True,
        )
        runtestprotocol(item, nextitem=None, log=False)

    def _run(self) -> None:
        early = self._early
        if early is None:  # pragma: no cover - pytest_collection always runs first
            raise OrchestratorError("the workers were not started")
        history, entry_costs = self._load_recorded()
        needs = [self.pipelines.need_of.get(item.nodeid, DEFAULT) for item in self.items]
        plan = make_plan([item.nodeid for item in self.items], history)
        executor, info, launched = early.executor, early.info, early.launched
        nodes = executor.node_resources()
        try:
            if self.options.address:
                cpus = max(1, info.cpus)
                workers = self.options.workers or auto_workers(plan, cpus, WORKER_STARTUP_SECONDS)
                if workers > cpus:
                    self.terminal.line(
                        f"orchestrator: the cluster has {cpus} CPUs; running {cpus} workers "
                        f"instead of {workers}",
                        yellow=True,
                    )
                    workers = cpus
            else:
                cpus = available_cpus()
                workers = self.options.workers or auto_workers(plan, cpus, WORKER_STARTUP_SECONDS)
                # The embedded instance is this run's alone, and Ray does not count its
                # CPUs (see ray_executor._actor_resources): it has room for one worker of every
                # distinct need, as the machine is shared by the workers anyway.
                room = math.ceil(sum(n.cpus for n in set(needs)))
                for node in nodes:
                    node["CPU"] = max(node.get("CPU", 0.0), float(room), float(workers))
            distinct, shapes = self._place(needs, plan, nodes, workers)
            if any(shape != DEFAULT for shape in shapes):
                # An early worker that holds a node's CPU may hold the very CPU a worker
                # with a GPU (or another resource) needs on that node: start afresh.
                for worker in [w for w in launched if executor.holds_cpu(w)]:
                    executor.close_worker(worker, graceful=False)
                    launched.remove(worker)
            if self.unplaced:
                self._skip_unplaced()
            if not self.items:
                return
            classes = []
            if shapes:
                needs = [self.pipelines.need_of.get(item.nodeid, DEFAULT) for item in self.items]
                classes = [distinct.index(n) for n in needs]
            groups = [fixture_group(item) for item in self.items]
            plan = make_plan([item.nodeid for item in self.items], history, classes, groups)
            workers = len(shapes) if shapes else min(workers, len(plan.nodeids))
            given = self._guesses_kept(early, plan)
            self.plan = plan
            self.pipelines.baselines = self._baselines(plan)
            self.where, self.workers = info.description, workers
            self.terminal.line(
                f"orchestrator: {len(plan.nodeids)} tests on {workers} worker(s), "
                f"{info.description}; {plan.known} with recorded durations, "
                f"estimated serial time {plan.total:.1f}s"
            )
            if executor.leased:
                self.terminal.line(
                    f"orchestrator: {min(executor.leased, workers)} worker(s) in warm relays "
                    "of `orchestrator up`"
                )
            for shape in sorted(set(shapes)):
                if shape != DEFAULT:
                    count = shapes.count(shape)
                    self.terminal.line(f"orchestrator: {count} worker(s) with {shape.describe()}")
            env = dict(os.environ)
            env.update(thread_env(os.environ, available_cpus(), workers))
            self.controller = Controller(
                plan,
                executor,
                self,
                workers=workers,
                args=self._args(),
                cwd=self._cwd(),
                env=env,
                retry=self._retry_policy(),
                timeout=self._timeout_of,
                basetemp=self._basetemp(),
                needs=distinct,
                shapes=shapes,
                workerinput={WORKERINPUT_KEY: self.pipelines.baselines},
                testrunuid=self.testrunuid,
                launched=launched,
                entry_costs=entry_costs,
                head_start=given,
                recycle=self.options.recycle,
            )
            self.stats = self.controller.stats
            # After Ray's start, which installs a SIGTERM handler of its own.
            previous = _terminate_as_interrupt()
            try:
                with self.terminal.progress_instead_of_tests(
                    self.options.progress, self._progress_text
                ):
                    self.controller.run()
            finally:
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)
        except KeyboardInterrupt as exc:
            executor.shutdown(graceful=False)
            # Raised afresh: the original traceback can end in Ray's compiled code, whose
            # frames have no line numbers and break pytest's report of the interruption.
            raise KeyboardInterrupt(str(exc) or "interrupted") from None

    def _guesses_kept(self, early: _EarlyStart, plan: Plan) -> Given | None:
        """What the controller keeps of the head start: the guesses it collected too."""
        head_start = early.head_start
        if head_start is None:
            return None
        where = match(head_start.nodeids, plan.nodeids)
        by_worker: dict[str, list[tuple[int, int]]] = {}
        for number, worker in enumerate(early.guessing[: len(head_start.batches)]):
            pairs = [(g, i) for g in head_start.given(number) if (i := where[g]) is not None]
            by_worker[worker] = pairs
        kept = sum(len(pairs) for pairs in by_worker.values())
        started = sum(len(head_start.given(n)) for n in range(len(head_start.batches)))
        dropped = f"; {started - kept} not collected this time" if kept < started else ""
        self.terminal.line(
            f"orchestrator: head start: {started} tests of the last run's collection "
            f"started while collecting{dropped}"
        )
        return Given(count=len(head_start.nodeids), by_worker=by_worker)

    def _place(
        self,
        needs: list[Resources],
        plan: Plan,
        nodes: list[dict[str, float]],
        workers: int,
    ) -> tuple[list[Resources], list[Resources]]:
        """Shape the workers from the tests' needs; note the tests nobody can run.

        Returns the distinct needs (resource classes) and the worker shapes; no shapes
        when every test is an ordinary one-CPU test (every worker runs every test).
        """
        work: dict[Resources, float] = defaultdict(float)
        counts: dict[Resources, int] = defaultdict(int)
        for index, need in enumerate(needs):
            work[need] += plan.estimates[index]
            counts[need] += 1
        distinct = sorted(work, key=lambda n: (n != DEFAULT, n))
        if distinct == [DEFAULT]:
            reasons = {}
            shapes: list[Resources] = []
        else:
            placed = shape_workers(work, counts, nodes, workers)
            reasons = dict(placed.unplaced)
            shapes = list(placed.shapes)
        for need in distinct:
            reason = missing(need, nodes)
            if reason is not None:
                reasons[need] = reason
        for item, need in zip(self.items, needs, strict=True):
            if need in reasons:
                self.unplaced[item.nodeid] = f"needs {need.describe()}: {reasons[need]}"
        if self.unplaced and self.config.getoption("strict_resources", False):
            shown = "\n".join(f"  {n}: {r}" for n, r in list(self.unplaced.items())[:20])
            raise UsageError(
                f"{len(self.unplaced)} test(s) need resources this cluster cannot give "
                f"(--strict-resources):\n{shown}\n"
                "Run them on a cluster that has these resources, or drop --strict-resources "
                "to skip them."
            )
        return [n for n in distinct if n not in reasons], shapes

    def _skip_unplaced(self) -> None:
        """Report the tests no worker can run as skipped, naming what is missing."""
        hook = self.config.hook
        keep = []
        for item in self.items:
            reason = self.unplaced.get(item.nodeid)
            if reason is None:
                keep.append(item)
                continue
            path, lineno, _ = item.location
            common = _report_fields(item)
            skipped = (path, (lineno or 0) + 1, f"Skipped: {reason}")
            hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
            for report in (
                pytest.TestReport(outcome="skipped", longrepr=skipped, when="setup", **common),
                pytest.TestReport(outcome="passed", longrepr=None, when="teardown", **common),
            ):
                hook.pytest_runtest_logreport(report=report)
            hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        self.items = keep

    def _baselines(self, plan: Plan) -> dict[str, dict[str, list[float]]]:
        """Metric history of this run's tests, for ``record_metric`` on the workers."""
        window = self.pipelines.settings.metrics.window
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return HistoryStore(self.options.store_path).metric_history(
                    window, set(plan.nodeids)
                )
            except (OSError, OrchestratorError) as exc:
                self.terminal.line(f"orchestrator: metric history unavailable: {exc}", yellow=True)
                return {}
            finally:
                for w in caught:
                    self.terminal.line(f"orchestrator: warning: {w.message}", yellow=True)

    def _args(self) -> list[str]:
        return [str(a) for a in self.config.invocation_params.args]

    def _cwd(self) -> str:
        return str(self.config.invocation_params.dir)

    def _basetemp(self) -> str | None:
        """The run's temporary directory; each worker gets its own directory inside it."""
        factory = getattr(self.config, "_tmp_path_factory", None)
        if factory is None:
            return None
        return str(factory.getbasetemp())

    # -- replay (the controller's listener) -------------------------------------------
    def _retry_policy(self) -> RetryPolicy:
        per_test = {}
        for index, item in enumerate(self.items):
            marker = item.get_closest_marker("retries")
            if marker is not None:
                value = marker.args[0] if marker.args else marker.kwargs.get("n", 0)
                per_test[index] = max(0, int(value))
        return RetryPolicy(
            retries=self.options.retries,
            only=compile_pattern(self.options.retry_only),
            per_test=per_test,
        )

    def _timeout_of(self, index: int) -> float | None:
        """The controller's hard limit for test ``index``: a timeout marker, else
        ``--ray-timeout``. Where pytest-timeout enforces the limit itself in the worker
        (its marker, ``--timeout``, the ``timeout`` ini value), ours is a backstop
        :data:`TIMEOUT_GRACE` seconds later, for what it cannot interrupt."""
        pytest_timeout = self.config.pluginmanager.has_plugin("timeout")
        grace = TIMEOUT_GRACE if pytest_timeout else 0.0
        marker = self.items[index].get_closest_marker("timeout")
        if marker is not None:
            value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
            if value is not None:
                return float(value) + grace if float(value) else None
        if self.options.timeout is not None or not pytest_timeout:
            return self.options.timeout
        value = getattr(self.config.option, "timeout", None)
        if value is None:
            try:
                value = self.config.getini("timeout") or None
            except (ValueError, KeyError):
                value = None
        return float(value) + grace if value and float(value) else None

    def test_final(self, index: int, attempt: Attempt, earlier: Sequence[Attempt]) -> None:
        """Replay the final attempt of a test; earlier attempts go into its JUnit record."""
        reports: list[pytest.TestReport] = []
        for data in attempt.reports:
            reports.append(self._from_data(index, data, reports[0].location if reports else None))
        if attempt.lost is not None:
            self._lost.add(index)
            reports.extend(self._lost_reports(index, attempt.lost, reports))
        nodeid = self.items[index].nodeid
        if earlier:
            self._attempts[index] = len(earlier) + 1
            if not attempt.failed:
                self.pipelines.flaky.add(nodeid)
            self.pipelines.earlier[nodeid] = [_attempt_facts(a) for a in earlier]
        if attempt.worker:
            self.pipelines.worker_of[nodeid] = attempt.worker
        for report in reports:
            if report.when == "teardown" and earlier:
                self._record_earlier(report, attempt, earlier)
            self._replay(index, report)
        if index in self._open:  # its reports ended without a teardown
            self._open.discard(index)
            item = self.items[index]
            self.config.hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        self._finished += 1
        self.terminal.draw()

    def _from_data(
        self, index: int, data: dict[str, Any], location: tuple[str, int | None, str] | None
    ) -> pytest.TestReport:
        """Rebuild a report; a plain one takes its location from the worker (sent with
        the setup phase, or ``location`` from an earlier phase), else from the item."""
        if data.get("$plain"):
            item = self.items[index]
            keywords = self._keywords.get(index)
            if keywords is None:
                keywords = self._keywords[index] = {name: 1 for name in item.keywords}
            sent = data.get("location")
            return pytest.TestReport(
                nodeid=item.nodeid,
                location=tuple(sent) if sent else location or item.location,
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
        common = _report_fields(item)
        out = [pytest.TestReport(outcome="failed", longrepr=message, when=when, **common)]
        if when == "setup":
            out.append(
                pytest.TestReport(outcome="passed", longrepr=None, when="teardown", **common)
            )
        return out

    def _record_earlier(
        self, report: pytest.TestReport, attempt: Attempt, earlier: Sequence[Attempt]
    ) -> None:
        xml = self.config.stash.get(xml_key, None)
        if xml is None:
            return
        reporter = xml.node_reporter(report)
        for previous in earlier:
            reporter.append(attempt_element(previous, final_failed=attempt.failed))

    def _replay(self, index: int, report: pytest.TestReport) -> None:
        hook = self.config.hook
        if index not in self._open:
            self._open.add(index)
            hook.pytest_runtest_logstart(nodeid=report.nodeid, location=report.location)
        self.durations[report.nodeid] += report.duration
        if report.failed and not hasattr(report, "wasxfail"):
            self._failed.add(index)
        hook.pytest_runtest_logreport(report=report)
        if report.when == "teardown":
            self._open.discard(index)
            hook.pytest_runtest_logfinish(nodeid=report.nodeid, location=report.location)

    # -- the workers, as pytest-xdist's hooks and the terminal show them ---------------
    def worker_starting(self, init: Message) -> None:
        if self.live_output:
            init["live"] = True
        self.nodes.configure(init)

    def worker_ready(self, worker: str) -> None:
        self.nodes.ready(worker)

    def worker_down(self, worker: str, error: str | None, bye: Message | None) -> None:
        if error and not self.nodes.was_ready(worker):
            # No test's report will say it: a worker lost while it started (it is replaced).
            self.terminal.line(f"orchestrator: worker {worker} {error}", yellow=True)
        self.nodes.down(worker, error, bye)

    def worker_output(self, worker: str, text: str) -> None:
        self.terminal.line(f"[{worker}] {text}")

    def worker_log(self, worker: str, message: Message) -> None:
        show_live_log(self.config, message)

    def test_warning(self, worker: str, data: dict[str, Any]) -> None:
        category = _warning_category(data["category"])
        text = data["message"]
        if category is UserWarning and not data["category"].endswith(".UserWarning"):
            text = f"{data['category']}: {text}"
        message = warnings.WarningMessage(
            message=category(text),
            category=category,
            filename=data["filename"],
            lineno=data["lineno"],
        )
        location = tuple(data["location"]) if data.get("location") else None
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

    def _progress_text(self) -> str:
        assert self.controller is not None
        eta = eta_seconds(self.controller.scheduler.remaining_seconds(), self.workers)
        elapsed = time.time() - self._t0
        return progress_line(self._finished, len(self.items), len(self._failed), elapsed, eta)

    # -- end of session ---------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._release()  # when the session ended before its tests ran (Ctrl-C, ...)
        if (
            self.options.fail_on_flaky
            and self.stats is not None
            and self.stats.flaky
            and session.exitstatus == pytest.ExitCode.OK
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.durations:
            try:
                learnt = self.controller.scheduler.learnt_entry_costs() if self.controller else {}
                # A shard's durations stay apart from those its split read (see
                # DurationStore.record), so that the split's other shards agree with it.
                sharded = self.config.pluginmanager.has_plugin("orchestrator-shard")
                DurationStore(self.options.store_path).record(
                    {**self.durations, **{ENTRY_PREFIX + f: c for f, c in learnt.items()}},
                    apart=sharded,
                )
                self._record_collection()
                self._record_history()
            except (OSError, OrchestratorError) as exc:
                self.terminal.line(
                    f"orchestrator: could not save durations to {self.options.store_path}: {exc}",
                    yellow=True,
                )

    def _record_collection(self) -> None:
        """What this run collected, for the next run's head start."""
        if not self._collected or not self._head_start_allowed():
            return
        root = self.config.rootpath
        depends = [*files_of(self._collected), *_conftest_files(self.config)]
        if self.config.inipath is not None:
            depends.append(str(self.config.inipath))
        pipelines = self.pipelines
        held_back = {n for n, need in pipelines.need_of.items() if need != DEFAULT}
        held_back.update(pipelines.metrics, pipelines.baselines)
        CollectionStore(self.options.store_path).save(
            self._collection_key(),
            LastCollection(
                nodeids=tuple(self._collected),
                files=stamps(root, depends),
                seconds=self._collect_seconds,
                held_back=frozenset(held_back & set(self._collected)),
            ),
        )

    def _record_history(self) -> None:
        """This run's outcomes and metrics, for trends, flake rates and metric baselines."""
        pipelines = self.pipelines
        attempts = {self.items[i].nodeid: n for i, n in self._attempts.items()}
        results = [
            TestResult(
                nodeid=nodeid,
                outcome=outcome,
                duration=pipelines.seconds.get(nodeid, 0.0),
                attempts=attempts.get(nodeid, 1),
                flaky=nodeid in pipelines.flaky,
                kind=pipelines.kind_of.get(nodeid, "unit"),
                worker=pipelines.worker_of.get(nodeid),
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
            )
            for nodeid, recorded in pipelines.metrics.items()
            for m in recorded
        ]
        HistoryStore(self.options.store_path).record_run(
            results,
            metrics,
            commit=current_commit(self.config.rootpath),
            started=self._t0,
            wall=self._t_loop_end - self._t0,
            workers=self.workers,
        )

    def pytest_terminal_summary(self, terminalreporter: TerminalReporter) -> None:
        if self.stats is None:
            return
        wall = self._t_loop_end - self._t0
        slowest = sorted(self.durations.items(), key=lambda kv: -kv[1])[:SLOWEST_SHOWN]
        first = self.stats.first_test_at
        startup = first - self._t_collected if first is not None else None
        terminalreporter.write_sep("=", "orchestrator summary")
        for line in summary_lines(
            where=self.where,
            workers=self.workers,
            wall=wall,
            serial=sum(self.durations.values()),
            slowest=slowest,
            lost=self.stats.lost,
            recycled=self.stats.recycled,
            store=str(self.options.store_path),
            startup=startup,
            flaky=[(self.items[i].nodeid, n) for i, n in sorted(self.stats.flaky.items())],
            fail_on_flaky=self.options.fail_on_flaky,
            retried_failing=[
                (self.items[i].nodeid, n)
                for i, n in sorted(self._attempts.items())
                if i not in self.stats.flaky
            ],
            gave_up=self.stats.gave_up,
        ):
            terminalreporter.write_line(line)


def _attempt_facts(attempt: Attempt) -> dict[str, Any]:
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


def _report_fields(item: pytest.Item) -> dict[str, Any]:
    """The fields of a report the controller makes up itself (a skip, a lost test)."""
    return {
        "nodeid": item.nodeid,
        "location": item.location,
        "keywords": {name: 1 for name in item.keywords},
        "sections": [],
        "duration": 0.0,
        "user_properties": [],
    }


def _warning_category(qualified: str) -> type[Warning]:
    """The warning class named ``module.Name`` if its module is loaded, else UserWarning."""
    module_name, _, name = qualified.rpartition(".")
    module = sys.modules.get(module_name)
    candidate = getattr(module, name, None) if module is not None else None
    if isinstance(candidate, type) and issubclass(candidate, Warning):
        return candidate
    return UserWarning


def _terminate_as_interrupt() -> Any:
    """Make SIGTERM stop the run like Ctrl-C (workers stopped, results kept, exit 2)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"received signal {signum}")

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _conftest_files(config: pytest.Config) -> list[str]:
    """The conftest.py files pytest loaded (they can change what is collected)."""
    files = []
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None) if isinstance(plugin, types.ModuleType) else None
        if path and os.path.basename(path) == "conftest.py":
            files.append(path)
    return sorted(files)
