"""Replay a suite on simulated workers with the real planner and scheduler (no Ray, no pytest).

Used by the tests to check the scheduler's guarantees and by the benchmarks to study
dispatch policies at scales no machine here can run.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.planner import Plan
from orchestrator.scheduler import Scheduler, file_of


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
) -> Simulation:
    """Run ``plan`` on ``workers`` simulated workers.

    ``actual`` holds the true durations (default: the plan's estimates); ``latency`` is
    the round trip from a worker asking for work to the work arriving; ``setup_cost``
    gives a file's module fixture cost, paid each time a worker enters that file (pytest
    tears module fixtures down when the next test is in another file).
    """
    costs = setup_cost or {}
    last_file: dict[int, str] = {}
    setups = 0
    durations = list(plan.estimates if actual is None else actual)
    sched = scheduler or Scheduler(plan, workers)
    names = [f"w{i}" for i in range(workers)]
    busy = [0.0] * workers
    runs: list[list[int]] = [[] for _ in range(workers)]
    ready = [(0.0, i) for i in range(workers)]
    heapq.heapify(ready)
    makespan = 0.0
    dispatches = 0
    while ready:
        now, w = heapq.heappop(ready)
        batch = sched.next_batch(names[w])
        if not batch:
            makespan = max(makespan, now)
            continue
        dispatches += 1
        t = now + latency
        for index in batch:
            file = file_of(plan.nodeids[index])
            setup = 0.0
            if last_file.get(w) != file:
                last_file[w] = file
                setups += 1
                setup = costs.get(file, 0.0)
            t += setup + durations[index]
            busy[w] += setup + durations[index]
            runs[w].append(index)
            sched.finished(names[w], index, setup)
        heapq.heappush(ready, (t, w))
    return Simulation(makespan, tuple(busy), dispatches, tuple(tuple(r) for r in runs), setups)
