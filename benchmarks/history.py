"""The run history at full size: what recording a run costs, and the `history` queries.

    python -m benchmarks.history [--tests 20000] [--runs 200] [--measure 3]

Records ``--runs`` runs of ``--tests`` tests into a new store through
:meth:`HistoryStore.record_run`, as the plugin does at the end of every run (durations
drawn at random, 1% of tests flaky and 0.5% failing in each run), so the store is as full
as it gets (:attr:`HistoryStore.MAX_RUNS` runs are kept). Then it records ``--measure``
runs more, each of which also prunes the oldest, and prints their median time: the cost a
run pays at its end, after its last test. Last, the queries ``orchestrator history``
makes: the slowest and flakiest tests, and one test's history.

Only the store's public methods are used, so the same script measures any version of it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from orchestrator.store.history import HistoryStore, TestResult


def run_results(nodeids: list[str], rng: random.Random) -> list[TestResult]:
    results = []
    for nodeid in nodeids:
        draw = rng.random()
        outcome = "failed" if draw < 0.005 else "passed"
        flaky = 0.005 <= draw < 0.015
        results.append(
            TestResult(
                nodeid,
                outcome,
                rng.lognormvariate(-4.0, 1.0),
                attempts=2 if flaky else 1,
                flaky=flaky,
                worker=f"gw{rng.randrange(2)}",
            )
        )
    return results


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=HistoryStore.MAX_RUNS)
    parser.add_argument("--measure", type=int, default=3, help="runs timed once the store is full")
    args = parser.parse_args()
    if args.tests < 1 or args.runs < 0 or args.measure < 1:
        parser.error("--tests and --measure must be at least 1, --runs at least 0")
    rng = random.Random(11)
    nodeids = [
        f"tests/pkg{i // 2_000}/test_mod{i // 100}.py::test_case[{i}]" for i in range(args.tests)
    ]

    with tempfile.TemporaryDirectory(prefix="history-bench-") as tmp:
        store = HistoryStore(Path(tmp) / "durations.db")
        started = time.perf_counter()
        for _ in range(args.runs):
            store.record_run(run_results(nodeids, rng), wall=60.0, workers=2)
        filling = time.perf_counter() - started
        size = store.path.stat().st_size / 2**20
        print(
            f"{args.runs} runs of {args.tests} tests recorded in {filling:.1f} s "
            f"({filling / max(args.runs, 1):.3f} s a run on average); store {size:.0f} MiB"
        )
        runs = [run_results(nodeids, rng) for _ in range(args.measure)]
        records = [timed(partial(store.record_run, r, wall=60.0, workers=2)) for r in runs]
        print(
            f"recording a run once the store is full: median {statistics.median(records):.3f} s "
            f"(each: {', '.join(f'{t:.3f}' for t in records)})"
        )
        print(f"slowest tests:    {timed(lambda: store.slowest(10)):.3f} s")
        print(f"flakiest tests:   {timed(lambda: store.flakiest(10)):.3f} s")
        middle = nodeids[len(nodeids) // 2]
        print(f"one test's runs:  {timed(lambda: store.test_history(middle)):.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
