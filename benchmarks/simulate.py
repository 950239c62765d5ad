"""Replay a suite on simulated workers with the real planner and scheduler (no Ray, no pytest).

Used by the tests to check the scheduler's guarantees and by the benchmarks to study
dispatch policies at scales no machine here can run.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.scheduling.planner import Plan
from orchestrator.scheduling.scheduler import Scheduler, file_of


@dataclass(frozen=True)
class Simulation:
    makespan: float
    busy: tuple[float, ...]
    dispatches: int
    #: Test indices in the order they started, per worker.
    runs: tuple[tuple[int, ...], ...]
    #: Module set-ups paid: a worker starting a test of another file than its last one.
    setups: int = 0

    @property
    def efficiency(self) -> float:
        """Busy time over workers x makespan (1.0 = nobody ever idle)."""
        if self.makespan <= 0:
            return 1.0
        return math.fsum(self.busy) / (len(self.busy) * self.makespan)


def simulate(
    plan: Plan,
    workers: int,
    *,
    actual: Sequence[float] | None = None,
    latency: float = 0.0,
    scheduler: Scheduler | None = None,
    setup_cost: Mapping[str, float] | None = None,
    ahead: bool = False,
) -> Simulation:
    """Run ``plan`` on ``workers`` simulated workers.

    ``actual`` holds the true durations (default: the plan's estimates); ``latency`` is
    the round trip from a worker asking for work to the answer arriving; ``setup_cost``
    gives a file's module fixture cost, paid each time a worker enters that file (pytest
    tears module fixtures down when the next test is in another file). With ``ahead``
    workers ask for more before they run out, as real ones do (see
    :meth:`Scheduler.ask_at`); without, only when they have nothing left.
    """
    costs = setup_cost or {}
    durations = list(plan.estimates if actual is None else actual)
    sched = scheduler or Scheduler(plan, workers)
    sim = _Run(sched, workers, durations, costs, latency, ahead)
    return sim.run()


class _Run:
    """The event loop of one simulation: workers run tests, ask, and get answers."""

    def __init__(
        self,
        sched: Scheduler,
        workers: int,
        durations: list[float],
        costs: Mapping[str, float],
        latency: float,
        ahead: bool,
    ) -> None:
        self.sched = sched
        self.nodeids = sched.plan.nodeids
        self.durations = durations
        self.costs = costs
        self.latency = latency
        self.ahead = ahead
        self.names = [f"w{i}" for i in range(workers)]
        self.busy = [0.0] * workers
        self.runs: list[list[int]] = [[] for _ in range(workers)]
        self.pending: list[deque[int]] = [deque() for _ in range(workers)]
        self.ask_at: list[int | None] = [None] * workers
        self.asked = [False] * workers
        self.running = [False] * workers
        self.last_file: dict[int, str] = {}
        self.setups = 0
        self.dispatches = 0
        self.makespan = 0.0
        self.events: list[tuple[float, int, str, int, Any]] = []
        self.seq = 0
        #: Workers told to wait (nothing for them now, but tests are still queued), with
        #: the scheduler's count of changes then: they ask again once it changed.
        self.parked: dict[int, int] = {}

    def push(self, when: float, kind: str, worker: int, data: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, kind, worker, data))

    def run(self) -> Simulation:
        for w in range(len(self.names)):
            self.asked[w] = True
            self.push(0.0, "need", w, False)
        while self.events:
            now, _, kind, w, data = heapq.heappop(self.events)
            if kind == "need":
                self.answer(now, w, bool(data))
            elif kind == "run":
                batch, ask_at = data
                self.asked[w] = False
                self.ask_at[w] = ask_at if self.ahead else None
                self.pending[w].extend(batch)
                if not self.running[w]:
                    self.start(now, w)
            elif kind == "later":
                self.asked[w] = False
                self.ask_at[w] = None
                if not self.running[w]:
                    self.out_of_work(now, w)
            else:  # "end"
                self.end(now, w, data)
                for parked, seen in sorted(self.parked.items()):
                    if seen != self.sched.changes or not any(self.running):
                        del self.parked[parked]
                        self.push(now, "need", parked, False)
        if self.sched.queued:
            raise RuntimeError(f"{self.sched.queued} tests were never given to a worker")
        runs = tuple(tuple(r) for r in self.runs)
        return Simulation(self.makespan, tuple(self.busy), self.dispatches, runs, self.setups)

    def answer(self, now: float, w: int, early: bool) -> None:
        batch = self.sched.next_batch(self.names[w], ahead=early)
        if batch:
            self.dispatches += 1
            self.push(now + self.latency, "run", w, (batch, self.sched.ask_at(batch)))
        elif early:
            self.push(now + self.latency, "later", w)
        elif self.sched.queued and any(self.running):
            self.parked[w] = self.sched.changes
        else:  # nothing left for this worker
            self.makespan = max(self.makespan, now)

    def start(self, now: float, w: int) -> None:
        index = self.pending[w].popleft()
        self.running[w] = True
        ask_at = self.ask_at[w]
        if ask_at is not None and not self.asked[w] and len(self.pending[w]) <= ask_at:
            self.asked[w] = True
            self.push(now, "need", w, True)
        file = file_of(self.nodeids[index])
        setup = 0.0
        if self.last_file.get(w) != file:
            self.last_file[w] = file
            self.setups += 1
            setup = self.costs.get(file, 0.0)
        took = setup + self.durations[index]
        self.busy[w] += took
        self.runs[w].append(index)
        self.push(now + took, "end", w, (index, setup))

    def end(self, now: float, w: int, done: tuple[int, float]) -> None:
        index, setup = done
        self.running[w] = False
        self.sched.finished(self.names[w], index, setup)
        self.makespan = max(self.makespan, now)
        if self.pending[w]:
            self.start(now, w)
        elif not self.asked[w]:
            self.out_of_work(now, w)

    def out_of_work(self, now: float, w: int) -> None:
        self.asked[w] = True
        self.push(now, "need", w, False)
