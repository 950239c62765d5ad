"""The controller side of ``pytest --ray``: pytest's hooks, and the parts of a run wired
together.

While pytest collects, the workers start (:mod:`pytest_orchestrator.early_start`). Then
the tests are planned and placed on workers by what they need
(:mod:`pytest_orchestrator.placement`), the controller runs them
(:mod:`orchestrator.run.controller`), and their results are replayed into pytest as they
come (:mod:`pytest_orchestrator.replay`). At the end the run is recorded
(:mod:`pytest_orchestrator.recording`) and summarized.
"""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections.abc import Generator, Sequence

import pytest

from orchestrator.config import RunOptions, available_cpus, thread_env
from orchestrator.errors import OrchestratorError
from orchestrator.reports.progress import eta_seconds, progress_line, summary_lines
from orchestrator.run.controller import Controller, RunStats
from orchestrator.run.executor import ClusterInfo, Executor
from orchestrator.run.run_config import RunConfig, WorkerSetup
from orchestrator.scheduling.planner import Plan, make_plan
from orchestrator.scheduling.resources import DEFAULT, Resources
from orchestrator.worker.gcpause import paused_gc
from pytest_orchestrator.early_start import (
    EarlyStart,
    head_start_for,
    ray_executor,
    start_early,
    usable_cpus,
    worker_count,
)
from pytest_orchestrator.groups import fixture_group
from pytest_orchestrator.limits import retry_policy, time_limits
from pytest_orchestrator.metrics import WORKERINPUT_KEY
from pytest_orchestrator.pipelines import Pipelines
from pytest_orchestrator.placement import make_room, place, strict_error
from pytest_orchestrator.pytest_private import TerminalReporter, runtestprotocol, tmp_path_factory
from pytest_orchestrator.recording import CollectionKey, Records, RunFacts
from pytest_orchestrator.replay import Replay
from pytest_orchestrator.terminal import Terminal
from pytest_orchestrator.xdist_nodes import Nodes

SLOWEST_SHOWN = 5


class RaySession:
    """Registered as a plugin on the controller when ``--ray`` is given."""

    def __init__(self, config: pytest.Config, options: RunOptions, pipelines: Pipelines) -> None:
        self.config = config
        self.options = options
        self.pipelines = pipelines
        self.plan: Plan | None = None
        self.controller: Controller | None = None
        self.stats: RunStats | None = None
        self.where = ""
        self.workers = 0
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
        #: The controller's listener: results replayed into this pytest session.
        self.replay = Replay(
            config, pipelines, self.terminal, self.nodes, live_output=self.live_output
        )
        self.key = CollectionKey(config, options)
        self.records = Records(config, options, pipelines, self.terminal, self.key)
        #: What every worker starts with; known once the workers start.
        self.setup: WorkerSetup | None = None
        #: The cluster connection and the workers started while the suite was collected.
        self._early: EarlyStart | None = None
        #: The executor whose Ray connection is being closed.
        self._closing: Executor | None = None
        #: When the tests started: the collection's end, or the head start's dispatch.
        self._t0 = 0.0
        self._t_collected = 0.0
        self._t_loop_end = 0.0
        #: Seconds the controller spent collecting, and the node ids it collected.
        self._collect_seconds = 0.0
        self._collected: list[str] = []

    # -- the run ---------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> Generator[None, object, object]:
        """Connect to Ray and start the workers before collecting: they collect the suite
        while the controller does, instead of after it."""
        if self.key.allowed():
            self.key.key()  # before collection changes anything
        if not session.config.option.collectonly:
            try:
                self._early = self._start_early()
            except OrchestratorError as exc:
                raise pytest.UsageError(str(exc)) from None
        start = time.perf_counter()
        try:
            with paused_gc():
                return (yield)
        finally:
            self._collect_seconds = time.perf_counter() - start

    def _start_early(self) -> EarlyStart:
        executor = ray_executor(self.config, self.options, self.terminal)
        params = self.config.invocation_params
        factory = tmp_path_factory(self.config)
        self.setup = WorkerSetup(
            args=tuple(str(a) for a in params.args),
            cwd=str(params.dir),
            testrunuid=self.testrunuid,
            # The run's temporary directory; each worker gets its own inside it.
            basetemp=str(factory.getbasetemp()) if factory is not None else None,
            recycle=self.options.recycle,
        )
        return start_early(
            executor,
            self.options,
            self.setup,
            starting=self.replay.worker_starting,
            guesses=head_start_for(self.records, self.config.rootpath, self.options.workers),
        )

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
        self.replay.items = list(session.items)
        self._collected = [item.nodeid for item in self.replay.items]
        self._t_collected = time.time()
        head_start_at = self._early.started_at if self._early is not None else None
        self._t0 = head_start_at or self._t_collected
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
        replay = self.replay
        failed = sorted(replay.failed - replay.lost)
        if not failed:
            if replay.failed:
                self.terminal.line(
                    "orchestrator: --pdb: every failing test crashed or hung its worker; "
                    "not running one here",
                    yellow=True,
                )
            return
        item = replay.items[failed[0]]
        self.terminal.line(
            f"orchestrator: --pdb: running {item.nodeid} again in this process, under the debugger",
            yellow=True,
        )
        runtestprotocol(item, nextitem=None, log=False)

    def _run(self) -> None:
        early, setup = self._early, self.setup
        if early is None or setup is None:  # pragma: no cover - pytest_collection runs first
            raise OrchestratorError("the workers were not started")
        history, entry_costs = self.records.durations()
        replay = self.replay
        needs = self._needs(replay.items)
        plan = make_plan([item.nodeid for item in replay.items], history)
        executor, info, launched = early.executor, early.info, early.launched
        nodes = list(executor.node_resources().values())
        try:
            cpus = usable_cpus(self.options, info)
            workers = worker_count(self.options.workers, cpus, plan)
            if self.options.address:
                if workers > cpus:
                    self.terminal.line(
                        f"orchestrator: the cluster has {cpus} CPUs; running {cpus} workers "
                        f"instead of {workers}",
                        yellow=True,
                    )
                    workers = cpus
            else:
                make_room(nodes, needs, workers)
            nodeids = [item.nodeid for item in replay.items]
            placement = place(nodeids, needs, plan.estimates, nodes, workers)
            self.unplaced = placement.unplaced
            if self.unplaced and self.config.getoption("strict_resources", False):
                raise strict_error(self.unplaced)
            if self.unplaced:
                replay.skip_unplaced(self.unplaced)
            items = replay.items
            if not items:
                return
            classes = placement.classes(self._needs(items))
            groups = [fixture_group(item) for item in items]
            plan = make_plan([item.nodeid for item in items], history, classes, groups)
            shapes = placement.shapes
            workers = len(shapes) if shapes else min(workers, len(plan.nodeids))
            given = early.kept(plan, self.terminal)
            self.plan = plan
            baselines = self.records.metric_baselines(plan.nodeids)
            self.pipelines.baselines = baselines.values
            self.pipelines.baseline_ref = baselines.ref
            self.where, self.workers = info.description, workers
            self._announce(plan, info, executor, shapes)
            env = dict(os.environ)
            env.update(thread_env(os.environ, available_cpus(), workers))
            config = RunConfig(
                workers=workers,
                setup=setup,
                env=env,
                retry=retry_policy(items, self.options),
                timeout=time_limits(self.config, items, self.options),
                needs=placement.needs,
                shapes=shapes,
                workerinput={WORKERINPUT_KEY: baselines.as_message()},
                launched=launched,
                entry_costs=entry_costs,
                head_start=given,
            )
            self.controller = Controller(plan, executor, replay, config)
            self.stats = self.controller.stats
            # After Ray's start, which installs a SIGTERM handler of its own.
            replay.interrupts.install()
            try:
                with self.terminal.progress_instead_of_tests(
                    self.options.progress, self._progress_text
                ):
                    self.controller.run()
            finally:
                replay.interrupts.restore()
        except KeyboardInterrupt as exc:
            executor.shutdown(graceful=False)
            # Raised afresh: the original traceback can end in Ray's compiled code, whose
            # frames have no line numbers and break pytest's report of the interruption.
            raise KeyboardInterrupt(str(exc) or "interrupted") from None

    def _flaky_outside_quarantine(self) -> list[str]:
        """Tests that passed only on a retry, less the quarantined ones (whose flakes are
        known and do not fail the run)."""
        if self.stats is None:
            return []
        items = self.replay.items
        flaky = [items[i].nodeid for i in self.stats.flaky]
        quarantine = self.config.pluginmanager.get_plugin("orchestrator-quarantine")
        quarantined = getattr(quarantine, "entries", {})
        return [nodeid for nodeid in flaky if nodeid not in quarantined]

    def _needs(self, items: Sequence[pytest.Item]) -> list[Resources]:
        """What each test needs of a worker (see the ``resources`` marker)."""
        return [self.pipelines.need_of.get(item.nodeid, DEFAULT) for item in items]

    def _announce(
        self, plan: Plan, info: ClusterInfo, executor: Executor, shapes: Sequence[Resources]
    ) -> None:
        """The run's start-up lines: the tests, the workers and where they run."""
        self.terminal.line(
            f"orchestrator: {len(plan.nodeids)} tests on {self.workers} worker(s), "
            f"{info.description}; {plan.known} with recorded durations, "
            f"estimated serial time {plan.total:.1f}s"
        )
        if executor.leased:
            self.terminal.line(
                f"orchestrator: {min(executor.leased, self.workers)} worker(s) in warm relays "
                "of `orchestrator up`"
            )
        for shape in sorted(set(shapes)):
            if shape != DEFAULT:
                count = shapes.count(shape)
                self.terminal.line(f"orchestrator: {count} worker(s) with {shape.describe()}")

    def _progress_text(self) -> str:
        assert self.controller is not None
        replay = self.replay
        eta = eta_seconds(self.controller.scheduler.remaining_seconds(), self.workers)
        elapsed = time.time() - self._t0
        return progress_line(replay.finished, len(replay.items), len(replay.failed), elapsed, eta)

    # -- end of session ---------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._release()  # when the session ended before its tests ran (Ctrl-C, ...)
        if (
            self.options.fail_on_flaky
            and self.stats is not None
            and self._flaky_outside_quarantine()
            and session.exitstatus == pytest.ExitCode.OK
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        replay = self.replay
        if replay.durations:
            learnt = self.controller.scheduler.learnt_entry_costs() if self.controller else {}
            facts = RunFacts(
                collected=self._collected,
                collect_seconds=self._collect_seconds,
                attempts={replay.items[i].nodeid: n for i, n in replay.attempts.items()},
                started=self._t0,
                wall=self._t_loop_end - self._t0,
                workers=self.workers,
            )
            self.records.record(replay.durations, learnt, facts)

    def pytest_terminal_summary(self, terminalreporter: TerminalReporter) -> None:
        if self.stats is None:
            return
        replay = self.replay
        wall = self._t_loop_end - self._t0
        slowest = sorted(replay.durations.items(), key=lambda kv: -kv[1])[:SLOWEST_SHOWN]
        first = self.stats.first_test_at
        startup = first - self._t_collected if first is not None else None
        terminalreporter.write_sep("=", "orchestrator summary")
        for line in summary_lines(
            where=self.where,
            workers=self.workers,
            wall=wall,
            serial=sum(replay.durations.values()),
            slowest=slowest,
            lost=self.stats.lost,
            recycled=self.stats.recycled,
            store=str(self.options.store_path),
            startup=startup,
            flaky=[(replay.items[i].nodeid, n) for i, n in sorted(self.stats.flaky.items())],
            fail_on_flaky=self.options.fail_on_flaky and bool(self._flaky_outside_quarantine()),
            retried_failing=[
                (replay.items[i].nodeid, n)
                for i, n in sorted(replay.attempts.items())
                if i not in self.stats.flaky
            ],
            gave_up=self.stats.gave_up,
        ):
            terminalreporter.write_line(line)
