"""Scheduler scaling, simulated: the real planner and scheduler, no Ray and no pytest.

    python -m benchmarks.scale [--tests 60000] [--workers 1000] [--latency 0.002]

Builds a heavy-tailed suite (log-normal durations, 500 tests per file, 50 files per
directory) with recorded durations for every test, then measures on this machine:

- planning: estimating and ordering every test (``make_plan``), and building the scheduler's
  queues;
- bookkeeping: tests per second while :func:`benchmarks.simulate.simulate` replays the
  suite on ``--workers`` simulated workers (the scheduler's dispatch and completion calls,
  and the simulation's own events: a test's start and end each), each request for work
  taking ``--latency`` seconds to be answered; workers ask ahead, as real ones do;
- efficiency: busy time over workers x makespan in the simulation.
"""

from __future__ import annotations

import argparse
import random
import time

from benchmarks.simulate import simulate
from orchestrator.scheduling.planner import make_plan
from orchestrator.scheduling.scheduler import Scheduler


def suite(tests: int, seed: int = 7) -> tuple[list[str], dict[str, float]]:
    rng = random.Random(seed)
    nodeids = [
        f"tests/pkg{i // 25_000}/test_mod{i // 500}.py::test_case[{i}]" for i in range(tests)
    ]
    return nodeids, {n: rng.lognormvariate(-3.0, 1.2) for n in nodeids}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=60_000)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.002, help="seconds per dispatch")
    args = parser.parse_args()
    nodeids, history = suite(args.tests)

    started = time.perf_counter()
    plan = make_plan(nodeids, history)
    planning = time.perf_counter() - started
    started = time.perf_counter()
    scheduler = Scheduler(plan, args.workers)
    queues = time.perf_counter() - started
    started = time.perf_counter()
    result = simulate(plan, args.workers, scheduler=scheduler, latency=args.latency, ahead=True)
    replay = time.perf_counter() - started

    share = plan.longest / plan.total
    print(
        f"{args.tests} tests, {plan.total:,.0f} s of work, longest {plan.longest:.1f} s "
        f"({share:.3%} of the total), {args.workers} workers, {args.latency * 1000:g} ms a dispatch"
    )
    print(f"planning:    {planning:.2f} s (make_plan), {queues:.2f} s more for the queues")
    print(
        f"bookkeeping: {args.tests / replay:,.0f} results/s ({replay:.2f} s for the replay, "
        f"{result.dispatches} dispatches)"
    )
    print(
        f"efficiency:  {result.efficiency:.3f} (makespan {result.makespan:,.1f} s, "
        f"lower bound {max(plan.total / args.workers, plan.longest):,.1f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
