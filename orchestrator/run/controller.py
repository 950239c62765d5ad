"""The controller's loop: feed workers from the scheduler, pass their results to a listener.

Knows nothing of pytest (the listener replays reports) and nothing of Ray (the executor
carries messages), so the rules about what happens when a worker needs work, finishes,
fails, hangs or dies live in one place. Every test ends with exactly one call of
:meth:`Listener.test_final`, however many attempts it took. Each kind of message from a
worker has its method, ``worker_<kind>`` (see :mod:`orchestrator.run.protocol`).
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.config import POLL_SECONDS
from orchestrator.errors import CollectionMismatch, OrchestratorError
from orchestrator.run.executor import Executor, WorkerLost
from orchestrator.run.numbering import Numbering
from orchestrator.run.protocol import (
    ByeMessage,
    CollectedMessage,
    CollectingMessage,
    EndMessage,
    ExitMessage,
    GoneMessage,
    InitMessage,
    LogMessage,
    Message,
    MissingMessage,
    MoreMessage,
    NeedMessage,
    OkMessage,
    OutMessage,
    PassMessage,
    ReadyMessage,
    RecycleMessage,
    ReportData,
    ReportMessage,
    TestsMessage,
    WarningMessage,
    decode_all,
    ok_report,
    pass_reports,
    run_message,
)
from orchestrator.run.run_config import RunConfig, worker_name
from orchestrator.scheduling.planner import Plan
from orchestrator.scheduling.resources import DEFAULT, Resources, adoptable, serves
from orchestrator.scheduling.retry import Attempt
from orchestrator.scheduling.scheduler import Scheduler

#: Seconds a replacement worker may take to be placed by Ray and to collect the suite.
REPLACEMENT_TIMEOUT = 120.0
#: Seconds a replacement may take to be placed before the workers there are stop waiting
#: for it: tests only it could still run in collection order go to them instead.
PLACEMENT_GRACE = 5.0
#: pytest's exit codes that say its session could not run as asked.
SESSION_ERRORS = {2: "interrupted", 3: "internal error", 4: "usage error"}
#: The messages that name a test by the worker's number for it (see :class:`Numbering`).
NUMBERED = frozenset(("report", "pass", "ok", "end"))


class Listener(Protocol):
    """What the controller tells the outside world (the pytest plugin implements it)."""

    def test_final(self, index: int, attempt: Attempt, earlier: Sequence[Attempt]) -> None:
        """Test ``index`` is over: ``attempt`` is its verdict, ``earlier`` its retried runs."""

    def replaying(self) -> AbstractContextManager[object]:
        """Around a batch of :meth:`test_final` calls: what the listener does once per
        batch instead of once per test (a terminal's flush) happens as the block ends."""

    def test_warning(self, worker: str, data: WarningMessage) -> None:
        """A warning recorded on a worker."""

    def should_stop(self) -> bool:
        """True once the run must stop handing out tests (``-x``, ``--maxfail``)."""

    def worker_starting(self, init: InitMessage) -> None:
        """A worker is about to start: add to its ``init`` (``workerinput``, ``live``)."""

    def worker_ready(self, worker: str) -> None:
        """A worker collected the suite and can take tests."""

    def worker_down(self, worker: str, error: str | None, bye: ByeMessage | None) -> None:
        """A worker ended: by itself (``bye`` holds its output), or not (``error``)."""

    def worker_output(self, worker: str, text: str) -> None:
        """A line a worker printed (with ``-s``)."""

    def worker_log(self, worker: str, message: LogMessage) -> None:
        """A live log record of a worker (with ``log_cli``)."""


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    FINISHING = "finishing"
    DONE = "done"


@dataclass
class RunStats:
    """What the summary reports about the run itself."""

    lost: list[str] = field(default_factory=list)
    #: Workers replaced by a fresh one at their recycling limit, and why.
    recycled: list[str] = field(default_factory=list)
    first_test_at: float | None = None
    #: Tests that passed only after failing, with their attempt counts.
    flaky: dict[int, int] = field(default_factory=dict)
    gave_up: str | None = None


class Controller:
    """Runs one plan on an executor's workers until every test has an outcome."""

    def __init__(
        self, plan: Plan, executor: Executor, listener: Listener, config: RunConfig
    ) -> None:
        self.plan = plan
        self.executor = executor
        self.listener = listener
        self.config = config
        self.needs = list(config.needs)
        self.shapes: list[Resources | None] = list(config.shapes) or [None] * config.workers
        workers = len(self.shapes)
        self.scheduler = Scheduler(plan, workers, entry_costs=config.entry_costs)
        self.workerinput = dict(config.workerinput)
        self.retry = config.retry
        self.target = workers
        limit = config.max_replacements
        self.max_replacements = max(workers, 4) if limit is None else limit
        self.states: dict[str, State] = {}
        self.stats = RunStats()
        self._next_id = len(config.launched)
        self._replacements = 0
        self._ever_ready = False
        #: Reports (and failure texts) of the attempt now running, by test.
        self._partial: dict[int, list[tuple[ReportData, str | None]]] = {}
        #: Earlier, retried attempts, by test.
        self._attempts: dict[int, list[Attempt]] = {}
        #: When each worker started the test it is running.
        self._since: dict[str, float] = {}
        #: Workers that asked for work and have not been given any yet.
        self._parked: set[str] = set()
        #: Parked workers already told to wait.
        self._waiting: set[str] = set()
        #: Workers being killed for a timeout: the test and its limit.
        self._killing: dict[str, tuple[int, float]] = {}
        #: Each worker's resource shape (None: an ordinary worker of a plain run).
        self._shape_of: dict[str, Resources | None] = {}
        #: Tests that ended since the last replay (the listener gets them in a batch).
        self._finals: deque[tuple[int, Attempt, Sequence[Attempt]]] = deque()
        #: Replacement workers not ready yet, and when they were asked for.
        self._placing: dict[str, float] = {}
        #: Workers that are ending at their recycling limit (replaced already).
        self._recycled: set[str] = set()
        #: How workers holding a head start's guesses number the plan's tests.
        self._numbering = Numbering()
        #: Workers whose pytest session ended in error (their ``bye``), waiting for the
        #: end of the process, which brings their last output.
        self._farewell: dict[str, ByeMessage] = {}
        #: The last worker lost and how, with its last output, for the give-up message.
        self._last_loss = ""
        #: What to do with each kind of message from a worker.
        self._handlers: Mapping[str, Callable[[str, Any], None]] = {
            "ready": self.worker_ready,
            "gone": self.worker_gone,
            "collecting": self.worker_collecting,
            "collected": self.worker_collected,
            "missing": self.worker_missing,
            "report": self.worker_report,
            "ok": self.worker_ok,
            "pass": self.worker_pass,
            "end": self.worker_end,
            "need": self.worker_need,
            "recycle": self.worker_recycle,
            "warning": self.worker_warning,
            "log": self.worker_log,
            "out": self.worker_out,
            "bye": self.worker_bye,
            "exit": self.worker_exit,
        }

    # -- workers ---------------------------------------------------------------------
    def _start(
        self, shapes: Sequence[Resources | None], adopt: Sequence[str] = (), *, wait: bool = True
    ) -> None:
        """Start a worker of each shape; default ones may be taken from ``adopt``.

        With ``wait`` (the run's start) this returns once Ray has placed them, and fails
        when it cannot. Without (replacements during the run) the others keep working
        meanwhile, and a worker not ready within :data:`REPLACEMENT_TIMEOUT` is given up.
        """
        spare = self._adoptable(shapes, adopt)
        inits: list[InitMessage] = []
        adopted: list[str] = []
        started: list[str] = []
        for shape in shapes:
            if spare and (shape is None or shape == DEFAULT):
                worker = spare.pop(0)
                adopted.append(worker)
            else:
                worker = worker_name(self._next_id)
                self._next_id += 1
                init = self.config.setup.init(worker, self.target, shape)
                self.listener.worker_starting(init)
                inits.append(init)
                started.append(worker)
            self.states[worker] = State.STARTING
            self._shape_of[worker] = shape
            if shape is not None:
                self.scheduler.set_serves(worker, serves(shape, self.needs))
        for worker in adopt:  # started early, not needed after all: nothing to finish
            if worker not in adopted:
                self.executor.close_worker(worker, graceful=False)
        tests: TestsMessage = {
            "t": "tests",
            "nodeids": list(self.plan.nodeids),
            "workerinput": self.workerinput,
        }
        # Workers started early learn their tests now, before new ones are waited for.
        for worker in adopted:
            if self.config.head_start is None:
                self.executor.send(worker, [tests])
            else:
                self._take_over(worker, tests)
        self.executor.dispatch()
        env, cwd = self.config.env, self.config.setup.cwd
        constrained = [init for init in inits if init.get("resources")]
        ordinary = [init for init in inits if not init.get("resources")]
        if constrained and ordinary and wait:
            # Ray may place an ordinary worker asked for a moment later on the node a GPU
            # worker waits for (a CPU being freed there by a worker that just stopped):
            # the constrained ones are placed first, then the others take what is left.
            self.executor.launch(constrained, env, cwd)
            self.executor.wait_started([init["worker"] for init in constrained])
            self.executor.launch(ordinary, env, cwd)
        elif inits:
            self.executor.launch(constrained + ordinary, env, cwd)
        if not wait:
            for worker in started:
                self.executor.send(worker, [tests])  # delivered once Ray has placed it
                self._placing[worker] = time.monotonic()
            return
        self.executor.wait_started(adopted + started)
        for worker in started:
            self.executor.send(worker, [tests])

    def _adoptable(self, shapes: Sequence[Resources | None], adopt: Sequence[str]) -> list[str]:
        """The workers started early that this run keeps for its ordinary shapes, in order:
        where shaped workers are to start too, not one that holds a CPU they need (see
        resources.adoptable)."""
        special = [s for s in shapes if s is not None and s != DEFAULT]
        if not special or not adopt:
            return list(adopt)
        self.executor.wait_started(adopt)  # where each is: placed first
        where = self.executor.worker_nodes(adopt)
        early = [(worker, where.get(worker)) for worker in adopt]
        wanted = len(shapes) - len(special)
        return adoptable(early, self.executor.node_resources(), special, wanted)

    def _take_over(self, worker: str, tests: TestsMessage) -> None:
        """An early worker holding a head start's guesses: the plan's tests follow them,
        and the guesses that are in the plan count as handed out to it."""
        head_start = self.config.head_start
        assert head_start is not None
        more: MoreMessage = {
            "t": "more",
            "nodeids": tests["nodeids"],
            "workerinput": self.workerinput,
        }
        self.executor.send(worker, [more])
        # Only tests of the classes this worker serves (in a run with shaped workers, the
        # early ones are ordinary: a guess that needs more than they have runs elsewhere).
        classes = set(self.scheduler.serves(worker))
        pairs = [
            (guess, index)
            for guess, index in head_start.by_worker.get(worker, ())
            if self.plan.class_of(index) in classes
        ]
        given = set(self.scheduler.give(worker, [index for _, index in pairs]))
        guessed = {guess: index for guess, index in pairs if index in given}
        self._numbering.take_over(worker, head_start.count, guessed)
        if given:
            self._since[worker] = time.monotonic()

    def _live(self) -> list[str]:
        return [w for w, s in self.states.items() if s is not State.DONE]

    def _retire(self, worker: str, error: str | None = None, bye: ByeMessage | None = None) -> None:
        """Forget a worker that ended, one way or another, and tell the listener (workers
        started early and closed unused in :meth:`_start` do not come here)."""
        if self.states.get(worker) is not State.DONE:
            self.listener.worker_down(worker, error, bye)
        self.states[worker] = State.DONE
        self._parked.discard(worker)
        self._waiting.discard(worker)
        self._since.pop(worker, None)
        # One never placed has nothing to finish (and would not answer).
        self.executor.close_worker(worker, graceful=self._placing.pop(worker, None) is None)

    def _check_placing(self) -> None:
        """Give up on replacements Ray could not place in time (a lost node's place may
        never come back), or that nothing is left for: the run goes on without them."""
        now = time.monotonic()
        idle = not self.scheduler.queued and not self.scheduler.running
        for worker, since in list(self._placing.items()):
            if self.states.get(worker) is not State.STARTING:
                self._placing.pop(worker, None)
            elif idle or now - since > REPLACEMENT_TIMEOUT:
                self._retire(worker, "not placed" if idle else "not placed in time")
                self.scheduler.worker_lost(worker)
                if not idle:
                    limit = f"{REPLACEMENT_TIMEOUT:g}"
                    self.stats.lost.append(f"{worker} (not placed within {limit} s)")
        # Those still waited for after a while are not counted on to come soon.
        self.scheduler.late = sum(
            1 for since in self._placing.values() if now - since > PLACEMENT_GRACE
        )

    # -- the loop --------------------------------------------------------------------
    def run(self) -> RunStats:
        try:
            self._loop()
        finally:  # also on Ctrl-C: every test that ended reaches the listener
            self._replay()
        return self.stats

    def _loop(self) -> None:
        self._start(self.shapes[: max(1, len(self.plan.nodeids))], adopt=self.config.launched)
        while self._live():
            for worker, result in self.executor.poll(POLL_SECONDS):
                if self.states.get(worker) in (None, State.DONE):
                    continue
                if isinstance(result, WorkerLost):
                    self._lost(worker, f"worker {worker} was lost ({result.message})")
                    continue
                for event in decode_all(result):
                    self._event(worker, event)
                    if self.states[worker] is State.DONE:
                        break
            for worker in list(self._parked):
                if self.states.get(worker) is State.READY:
                    self._serve(worker)
            # Workers waiting for work get it before the controller replays reports.
            self.executor.dispatch()
            self._replay()
            self._enforce_timeouts()
            if self._placing or self.scheduler.late:
                self._check_placing()
            if not self.scheduler.stopped and self.listener.should_stop():
                self._stop()
        if self.scheduler.queued and not self.scheduler.stopped:
            # Only possible when every worker able to run some tests was lost for good.
            self._give_up(
                "not run: every worker able to run this test was lost and the replacement "
                f"limit was reached; the last one lost: {self._last_loss or 'none'}"
            )

    def _stop(self) -> None:
        """Stop handing out tests; tests waiting for a retry keep their last verdict."""
        for index in self.scheduler.stop():
            earlier = self._attempts.pop(index, [])
            if earlier:
                self._final(index, earlier[-1], earlier[:-1])
        for worker in self._live():
            self.executor.send(worker, [{"t": "stop"}])

    def _event(self, worker: str, event: Message) -> None:
        kind = event["t"]
        if self._numbering and kind in NUMBERED:
            index = self._numbering.index(worker, event["i"])
            if index is None:
                return  # a guessed test this run did not collect: its result is dropped
            event["i"] = index
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(worker, event)

    # -- messages from workers -------------------------------------------------------
    def worker_ready(self, worker: str, event: ReadyMessage) -> None:
        if event["nmissing"]:
            raise CollectionMismatch(_mismatch_message(worker, event))
        self.states[worker] = State.READY
        self._ever_ready = True
        self.listener.worker_ready(worker)

    def worker_gone(self, worker: str, event: GoneMessage) -> None:
        """Guesses of a head start the worker did not find."""
        kept = self._numbering.guessed(worker)
        lacking = [self.plan.nodeids[kept[g]] for g in event["i"] if g in kept]
        if lacking:
            lost: MissingMessage = {
                "t": "missing",
                "missing": lacking[:50],
                "nmissing": len(lacking),
                "errors": [],
            }
            raise CollectionMismatch(_mismatch_message(worker, lost))

    def worker_collecting(self, worker: str, event: CollectingMessage) -> None:
        """A test file, before its first test here: not timed."""
        self._since.pop(worker, None)

    def worker_collected(self, worker: str, event: CollectedMessage) -> None:
        self._since[worker] = time.monotonic()

    def worker_missing(self, worker: str, event: MissingMessage) -> None:
        """A test file collected late lacks some of its tests."""
        raise CollectionMismatch(_mismatch_message(worker, event))

    def worker_report(self, worker: str, event: ReportMessage) -> None:
        self._report(event["i"], event["r"], event.get("text"))

    def worker_ok(self, worker: str, event: OkMessage) -> None:
        """One plain passed phase (see orchestrator.worker.session.PLAIN_FIELDS)."""
        self._report(event["i"], ok_report(event), None)

    def worker_pass(self, worker: str, event: PassMessage) -> None:
        """Three plain passed phases, timings only: most tests of most runs."""
        reports = pass_reports(event)
        plain = not any("extras" in data for data in reports)
        self._test_done(worker, event["i"], reports, (), reports[0]["duration"], plain=plain)

    def worker_end(self, worker: str, event: EndMessage) -> None:
        """The test's reports (any number, or none) are complete."""
        parts = self._partial.pop(event["i"], [])
        setup = next((d.get("duration") for d, _ in parts if d.get("when") == "setup"), None)
        reports = tuple(d for d, _ in parts)
        self._test_done(worker, event["i"], reports, tuple(t for _, t in parts if t), setup)

    def worker_need(self, worker: str, event: NeedMessage) -> None:
        if event.get("ahead"):
            self._serve_ahead(worker)
        else:
            self._parked.add(worker)
            self._serve(worker)

    def worker_recycle(self, worker: str, event: RecycleMessage) -> None:
        self._recycle(worker, event["why"])

    def worker_warning(self, worker: str, event: WarningMessage) -> None:
        self.listener.test_warning(worker, event)

    def worker_log(self, worker: str, event: LogMessage) -> None:
        self.listener.worker_log(worker, event)

    def worker_out(self, worker: str, event: OutMessage) -> None:
        self.listener.worker_output(worker, event["s"])

    def worker_bye(self, worker: str, event: ByeMessage) -> None:
        if self.states[worker] is State.STARTING or event.get("code") in SESSION_ERRORS:
            self._farewell[worker] = event  # its output comes with the process's end
        else:
            self._done(worker, event)

    def worker_exit(self, worker: str, event: ExitMessage) -> None:
        bye = self._farewell.pop(worker, None)
        if self.states[worker] is State.STARTING:
            self._failed_start(worker, event, bye)
        elif bye is not None:
            self._done(worker, bye, event.get("log"))
        elif worker in self._killing:
            index, limit = self._killing.pop(worker)
            self._lost(
                worker,
                f"{self.plan.nodeids[index]} timed out after {limit:g} s; "
                f"worker {worker} was stopped",
                event,
                cause="timeout",
            )
        else:
            self._lost(worker, f"worker {worker} crashed", event)

    # -- work ------------------------------------------------------------------------
    def _recycle(self, worker: str, why: str) -> None:
        """A worker at its recycling limit tore its fixtures down and is ending: the tests
        it held go back to the queue, and a fresh worker takes its place. Neither counts
        against the replacement limit: nothing went wrong."""
        self.stats.recycled.append(f"{worker}: {why}")
        self._recycled.add(worker)
        self.states[worker] = State.FINISHING
        self._parked.discard(worker)
        self._waiting.discard(worker)
        self._since.pop(worker, None)
        self.scheduler.requeue(self.scheduler.release(worker))
        if self.scheduler.queued and not self.scheduler.stopped:
            self.scheduler.add_worker()
            self._start([self._shape_of.get(worker)], wait=False)

    def _serve(self, worker: str) -> None:
        """Answer a worker's request for work: tests, "wait" or "finish".

        While any test is still running somewhere, its failure could queue a retry, so a
        worker with nothing to do waits (tearing its fixtures down) instead of leaving.
        """
        idle = not self.scheduler.assigned(worker)
        batch = self.scheduler.next_batch(worker, available=self._available())
        if batch:
            self._parked.discard(worker)
            self._waiting.discard(worker)
            if idle:  # else the clock starts when its current test's teardown arrives
                self._since[worker] = time.monotonic()
            self._send_batch(worker, batch)
        elif self._unsettled(worker):
            if worker not in self._waiting:
                self._waiting.add(worker)
                self.executor.send(worker, [{"t": "wait"}])
        else:
            self._parked.discard(worker)
            self._waiting.discard(worker)
            self.states[worker] = State.FINISHING
            self.executor.send(worker, [{"t": "finish"}])

    def _serve_ahead(self, worker: str) -> None:
        """Answer a worker that asks before it runs out: more tests, or "later" (it asks
        again when it has run what it holds)."""
        batch: list[int] = []
        if self.states.get(worker) is State.READY:
            batch = self.scheduler.next_batch(worker, available=self._available(), ahead=True)
        if batch:
            self._send_batch(worker, batch)
        else:
            self.executor.send(worker, [{"t": "later"}])

    def _available(self) -> list[str]:
        """The workers that can still take work (a retry waits for one of them)."""
        return [w for w, s in self.states.items() if s in (State.STARTING, State.READY)]

    def _send_batch(self, worker: str, batch: list[int]) -> None:
        numbers = self._numbering.numbers(worker, batch)
        self.executor.send(worker, [run_message(numbers, self.scheduler.ask_at(batch))])

    def _unsettled(self, worker: str) -> bool:
        """Could more work still appear for ``worker`` (a queued test of a class it
        serves, or a running one that may fail and be retried)?"""
        if self.scheduler.stopped:
            return False
        return self.scheduler.has_work_for(worker, running_counts=self.retry.enabled)

    def _report(self, index: int, data: ReportData, text: str | None) -> None:
        if self.stats.first_test_at is None:
            self.stats.first_test_at = time.time()
        self._partial.setdefault(index, []).append((data, text))

    def _test_done(
        self,
        worker: str,
        index: int,
        reports: Sequence[ReportData],
        texts: tuple[str, ...],
        setup: float | None,
        *,
        plain: bool = False,
    ) -> None:
        """All phases of test ``index`` arrived from ``worker``: their report data, the
        failures' texts and the setup's duration (None: no setup report); ``plain``: see
        :attr:`Attempt.plain`."""
        if self.stats.first_test_at is None:
            self.stats.first_test_at = time.time()
        self.scheduler.finished(worker, index, setup)
        self._since[worker] = time.monotonic()
        attempt = Attempt(worker=worker, reports=tuple(reports), texts=texts, plain=plain)
        self._conclude(index, attempt)

    def _conclude(self, index: int, attempt: Attempt) -> None:
        """Retry the test, or hand its final attempt to the listener."""
        earlier = self._attempts.setdefault(index, [])
        if not self.scheduler.stopped and self.retry.should_retry(index, len(earlier) + 1, attempt):
            earlier.append(attempt)
            self.scheduler.retry(index, attempt.worker)
            return
        self._attempts.pop(index, None)
        self._final(index, attempt, earlier)

    def _final(self, index: int, attempt: Attempt, earlier: Sequence[Attempt]) -> None:
        if earlier and not attempt.failed:
            self.stats.flaky[index] = len(earlier) + 1
        self._finals.append((index, attempt, earlier))

    def _replay(self) -> None:
        """Hand the tests that ended to the listener, in the order they ended."""
        if not self._finals:
            return
        with self.listener.replaying():
            while self._finals:
                self.listener.test_final(*self._finals.popleft())

    # -- failures --------------------------------------------------------------------
    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        for worker, state in self.states.items():
            if state is State.DONE or worker in self._killing:
                continue
            index = self.scheduler.in_flight(worker)
            if index is None or worker not in self._since:
                continue
            limit = self.config.timeout(index)
            if limit is not None and now - self._since[worker] > limit:
                self._killing[worker] = (index, limit)
                self.executor.send(worker, [{"t": "kill"}])

    def _done(self, worker: str, bye: ByeMessage, log: str | None = None) -> None:
        """A worker's pytest session ended (``log``: its last output, when it ended in
        error)."""
        code = bye.get("code")
        error = _session_end(code) if code in SESSION_ERRORS else None
        if error:
            self.stats.lost.append(f"{worker} ({error})")
            self._last_loss = f"{worker}: {error}" + _output_of(worker, log)
        self._retire(worker, error, bye)
        if worker in self._recycled:
            return  # what it held went back when it said so
        for index in self.scheduler.release(worker):
            if not self.scheduler.stopped:
                message = f"worker {worker} ended without running {self.plan.nodeids[index]}"
                if error:
                    message += f": {error}{_output_of(worker, log)}"
                self._conclude(index, self._lost_attempt(worker, index, message, "crash"))

    def _failed_start(self, worker: str, event: ExitMessage, bye: ByeMessage | None) -> None:
        """A worker ended before it collected the tests. When its own pytest session
        ended it (a plugin or conftest.py failed there, an import failed, ...), every
        worker would fail alike: the run stops, with that worker's output."""
        shape = self._shape_of.get(worker)
        code = bye.get("code") if bye is not None else None
        how = _session_end(code) if code is not None else event["how"]
        output = _output_of(worker, event.get("log"))
        by_itself = code is not None or event.get("code", 0) > 0
        if by_itself or (not self._ever_ready and len(self._live()) == 1):
            # The run ends here, with this error alone (not also as a lost worker).
            raise OrchestratorError(
                f"worker {worker} could not start: {how} before it collected the tests.{output}"
            )
        self._retire(worker, f"ended before it collected the tests ({how}).{output}", bye)
        self.scheduler.worker_lost(worker)
        self.stats.lost.append(f"{worker} (during start-up, {how})")
        self._last_loss = f"{worker} during start-up ({how}).{output}"
        self._keep_capacity(shape)

    def _lost_attempt(self, worker: str, index: int, message: str, cause: str) -> Attempt:
        parts = self._partial.pop(index, [])
        return Attempt(
            worker=worker,
            reports=tuple(d for d, _ in parts),
            texts=tuple(t for _, t in parts if t),
            lost=message,
            cause=cause,
        )

    def _lost(
        self, worker: str, what: str, event: ExitMessage | None = None, cause: str = "crash"
    ) -> None:
        """A worker died: its running test gets an error or a retry, its queue goes back."""
        shape = self._shape_of.get(worker)
        self._retire(worker, what)
        if worker in self._recycled:  # died while it ended: replaced already, held nothing
            self.stats.lost.append(f"{worker} (after it was recycled)")
            return
        running, _requeued = self.scheduler.worker_lost(worker)
        how = f" ({event['how']})" if event and cause == "crash" else ""
        self.stats.lost.append(f"{worker}{' (timeout)' if cause == 'timeout' else how}")
        self._last_loss = what + _output_of(worker, event.get("log") if event else None)
        if running is not None:
            nodeid = self.plan.nodeids[running]
            message = what if cause == "timeout" else f"{what} while running {nodeid}{how}"
            if event and event.get("log") and cause == "crash":
                message += f"\n\nlast output of {worker}:\n{event['log']}"
            self._conclude(running, self._lost_attempt(worker, running, message, cause))
        self._keep_capacity(shape, explained=running is not None)

    def _keep_capacity(self, shape: Resources | None, *, explained: bool = False) -> None:
        """Replace a dead worker while tests are queued.

        A worker that died running a test (a crash, a timeout) is replaced whatever
        happened before: the fault is that test's, and it used up one of the test's
        attempts, so such replacements end when the tests' attempts do. Only losses no
        test explains (start-up, collection, between tests) count against the limit.
        """
        if not self.scheduler.queued or self.scheduler.stopped:
            return
        if explained or self._replacements < self.max_replacements:
            if not explained:
                self._replacements += 1
            self.scheduler.add_worker()
            self._start([shape], wait=False)
        elif not self._live():
            self._give_up(
                f"not run: {self._replacements} replacement workers died too "
                f"(the limit); every worker of this run was lost, the last one: "
                f"{self._last_loss}"
            )

    def _give_up(self, message: str) -> None:
        self.stats.gave_up = message
        for index in self.scheduler.stop():
            earlier = self._attempts.pop(index, [])
            if earlier:
                self._final(index, earlier[-1], earlier[:-1])
            else:
                self._final(index, Attempt("", (), lost=message, cause="not run"), [])


def _session_end(code: int) -> str:
    """How a worker's pytest session ended, by its exit code."""
    meaning = f" ({SESSION_ERRORS[code]})" if code in SESSION_ERRORS else ""
    return f"its pytest session ended with exit code {code}{meaning}"


def _output_of(worker: str, log: str | None) -> str:
    """A worker's last output, to append to a message about it."""
    if not log or not log.strip():
        return f" {worker} printed nothing."
    return f"\nThe output of {worker} ends with:\n{log.rstrip()}"


def _mismatch_message(worker: str, event: ReadyMessage | MissingMessage) -> str:
    shown = "\n".join(f"  {nodeid}" for nodeid in event["missing"])
    more = event["nmissing"] - len(event["missing"])
    tail = f"\n  ... and {more} more" if more > 0 else ""
    errors = "".join(f"\nIt could not collect {error}" for error in event.get("errors") or ())
    return (
        f"worker {worker} did not collect {event['nmissing']} of the tests the controller "
        f"collected:\n{shown}{tail}{errors}\n"
        "Test ids must be the same in every process: give parametrize explicit ids= or "
        "make generated parameters deterministic (sorted, seeded)."
    )
