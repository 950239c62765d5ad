"""The controller's loop: feed workers from the scheduler, pass their events to a listener.

Knows nothing of pytest (the listener replays reports) and nothing of Ray (the executor
carries messages), so the rules about what happens when a worker needs work, finishes
a test or dies live in one place.
"""

from __future__ import annotations

import enum
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.config import POLL_SECONDS
from orchestrator.errors import CollectionMismatch, OrchestratorError
from orchestrator.executor import Executor, WorkerLost
from orchestrator.planner import Plan
from orchestrator.protocol import Message, decode
from orchestrator.scheduler import Scheduler


class Listener(Protocol):
    """What the controller tells the outside world (the pytest plugin implements it)."""

    def test_report(self, worker: str, index: int, data: Message) -> None:
        """A serialized report of one phase of test ``index``."""

    def test_warning(self, worker: str, data: Message) -> None:
        """A warning recorded on a worker."""

    def test_lost(self, worker: str | None, index: int, message: str) -> None:
        """Test ``index`` ended without its reports (its worker died, or none was left)."""

    def should_stop(self) -> bool:
        """True once the run must stop handing out tests (``-x``, ``--maxfail``)."""


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    FINISHING = "finishing"
    DONE = "done"


@dataclass
class RunStats:
    """What the summary reports about the workers themselves."""

    workers: int = 0
    started: int = 0
    lost: list[str] = field(default_factory=list)
    first_test_at: float | None = None


class Controller:
    """Runs one plan on an executor's workers until every test has an outcome."""

    def __init__(
        self,
        plan: Plan,
        executor: Executor,
        listener: Listener,
        *,
        workers: int,
        args: Sequence[str],
        cwd: str,
        env: Mapping[str, str],
        max_replacements: int | None = None,
        basetemp: str | None = None,
    ) -> None:
        self.plan = plan
        self.executor = executor
        self.listener = listener
        self.scheduler = Scheduler(plan, workers)
        self.args = list(args)
        self.cwd = cwd
        self.env = dict(env)
        self.basetemp = basetemp
        self.testrunuid = uuid.uuid4().hex
        self.target = workers
        self.max_replacements = workers if max_replacements is None else max_replacements
        self.states: dict[str, State] = {}
        self.stats = RunStats(workers=workers)
        self._next_id = 0
        self._replacements = 0
        self._ever_ready = False

    # -- workers ---------------------------------------------------------------------
    def _init(self, worker: str) -> Message:
        return {
            "t": "init",
            "worker": worker,
            "args": self.args,
            "nodeids": list(self.plan.nodeids),
            "workercount": self.target,
            "testrunuid": self.testrunuid,
            # One temporary directory per worker, under the run's own (as pytest-xdist).
            "basetemp": os.path.join(self.basetemp, worker) if self.basetemp else None,
        }

    def _start(self, count: int) -> None:
        inits = []
        for _ in range(count):
            worker = f"gw{self._next_id}"
            self._next_id += 1
            self.states[worker] = State.STARTING
            inits.append(self._init(worker))
        self.executor.start_workers(inits, self.env, self.cwd)
        self.stats.started += count

    def _live(self) -> list[str]:
        return [w for w, s in self.states.items() if s is not State.DONE]

    # -- the loop --------------------------------------------------------------------
    def run(self) -> RunStats:
        self._start(min(self.target, max(1, len(self.plan.nodeids))))
        while self._live():
            for worker, result in self.executor.poll(POLL_SECONDS):
                if self.states.get(worker) in (None, State.DONE):
                    continue
                if isinstance(result, WorkerLost):
                    self._lost(worker, f"worker {worker} was lost ({result.message})")
                    continue
                for raw in result:
                    self._event(worker, raw if isinstance(raw, dict) else decode(raw))
                    if self.states[worker] is State.DONE:
                        break
            if not self.scheduler.stopped and self.listener.should_stop():
                self.scheduler.stop()
                for worker in self._live():
                    self.executor.send(worker, [{"t": "stop"}])
        return self.stats

    def _event(self, worker: str, event: Message) -> None:
        kind = event["t"]
        if kind == "report":
            if self.stats.first_test_at is None:
                self.stats.first_test_at = time.time()
            self.listener.test_report(worker, event["i"], event["r"])
            if event["r"].get("when") == "teardown":
                self.scheduler.finished(worker, event["i"])
        elif kind == "need":
            batch = self.scheduler.next_batch(worker)
            if batch:
                self.executor.send(worker, [{"t": "run", "i": batch}])
            else:
                self.states[worker] = State.FINISHING
                self.executor.send(worker, [{"t": "finish"}])
        elif kind == "warning":
            self.listener.test_warning(worker, event)
        elif kind == "ready":
            if event["nmissing"]:
                raise CollectionMismatch(_mismatch_message(worker, event))
            self.states[worker] = State.READY
            self._ever_ready = True
        elif kind == "bye":
            self._done(worker)
        elif kind == "exit":
            if self.states[worker] is State.STARTING:
                self._failed_start(worker, event)
            else:
                self._lost(worker, f"worker {worker} crashed", event)

    def _done(self, worker: str) -> None:
        self.states[worker] = State.DONE
        for index in self.scheduler.release(worker):
            if not self.scheduler.stopped:
                self.listener.test_lost(
                    worker, index, f"worker {worker} ended without running this test"
                )
        self.executor.close_worker(worker)

    def _failed_start(self, worker: str, event: Message) -> None:
        self.states[worker] = State.DONE
        self.executor.close_worker(worker)
        self.scheduler.worker_lost(worker)
        if not self._ever_ready and not self._live():
            raise OrchestratorError(
                f"worker {worker} exited before it collected the tests ({event['how']}); "
                f"its output ends with:\n{event.get('log', '')}"
            )
        self.stats.lost.append(f"{worker} (during start-up, {event['how']})")
        self._keep_capacity()

    def _lost(self, worker: str, what: str, event: Message | None = None) -> None:
        """A worker died: its running test gets an error, its queue goes to the others."""
        self.states[worker] = State.DONE
        self.executor.close_worker(worker)
        running, _requeued = self.scheduler.worker_lost(worker)
        how = f" ({event['how']})" if event else ""
        self.stats.lost.append(f"{worker}{how}")
        if running is not None:
            nodeid = self.plan.nodeids[running]
            message = f"{what} while running {nodeid}{how}"
            if event and event.get("log"):
                message += f"\n\nlast output of {worker}:\n{event['log']}"
            self.listener.test_lost(worker, running, message)
        self._keep_capacity()

    def _keep_capacity(self) -> None:
        """Replace a dead worker while tests are queued, up to the replacement limit."""
        if not self.scheduler.queued or self.scheduler.stopped:
            return
        if self._replacements < self.max_replacements:
            self._replacements += 1
            self.scheduler.add_worker()
            self._start(1)
        elif not self._live():
            self._give_up(
                "not run: every worker died and the limit of "
                f"{self.max_replacements} replacement workers was reached"
            )

    def _give_up(self, message: str) -> None:
        for index in self.scheduler.stop():
            self.listener.test_lost(None, index, message)


def _mismatch_message(worker: str, event: Message) -> str:
    shown = "\n".join(f"  {nodeid}" for nodeid in event["missing"])
    more = event["nmissing"] - len(event["missing"])
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return (
        f"worker {worker} did not collect {event['nmissing']} of the tests the controller "
        f"collected:\n{shown}{tail}\n"
        "Test ids must be the same in every process: give parametrize explicit ids= or "
        "make generated parameters deterministic (sorted, seeded)."
    )
