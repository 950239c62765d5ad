"""Starting the workers while pytest collects, and how many workers a run gets.

The controller connects to Ray and starts its default workers before it collects the
suite: they collect it meanwhile, instead of after it. With a head start (see
orchestrator.scheduling.head_start) they are also given the tests the last run with these
arguments collected, and run them at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.cluster.ray_start import resolve_auto
from orchestrator.cluster.shipping import needs_shipping, plan_shipment
from orchestrator.config import WORKER_STARTUP_SECONDS, RunOptions, available_cpus, thread_env
from orchestrator.run.executor import ClusterInfo, Executor
from orchestrator.run.protocol import InitMessage, run_message
from orchestrator.run.run_config import WorkerSetup, with_guesses, worker_name
from orchestrator.scheduling.head_start import (
    Given,
    HeadStart,
    match,
    plan_head_start,
    unchanged,
)
from orchestrator.scheduling.planner import Plan, auto_workers, make_plan
from pytest_orchestrator.recording import Records
from pytest_orchestrator.terminal import Terminal

#: Workers started before collection when their number is left to us (``auto``); more are
#: started after planning if the suite can use them, and those it cannot are closed.
EARLY_WORKERS_MAX = 32


def worker_count(requested: int | None, cpus: int, plan: Plan | None = None) -> int:
    """How many workers a run gets on ``cpus`` CPUs: ``--ray-workers`` (``requested``),
    else as many as the ``plan`` can use (see planner.auto_workers); before there is a
    plan, one per CPU up to :data:`EARLY_WORKERS_MAX`. The caller caps it where the
    cluster cannot hold more."""
    if requested is not None:
        return requested
    if plan is None:
        return min(cpus, EARLY_WORKERS_MAX)
    return auto_workers(plan, cpus, WORKER_STARTUP_SECONDS)


def usable_cpus(options: RunOptions, info: ClusterInfo) -> int:
    """The CPUs the workers share: the cluster's, or this machine's for the instance a run
    starts for itself (which Ray is not asked to count)."""
    return max(1, info.cpus) if options.address else available_cpus()


@dataclass
class EarlyStart:
    """The cluster connection made, and the default workers started, before collection."""

    executor: Executor
    info: ClusterInfo
    launched: list[str]
    #: The tests the workers were given before the controller collected, if any.
    head_start: HeadStart | None = None
    #: The early workers holding the head start's guesses, in launch order.
    guessing: tuple[str, ...] = ()
    #: When the head start's tests were sent (None: no head start).
    started_at: float | None = None

    def kept(self, plan: Plan, terminal: Terminal) -> Given | None:
        """What the controller keeps of the head start: the guesses it collected too."""
        head_start = self.head_start
        if head_start is None:
            return None
        where = match(head_start.nodeids, plan.nodeids)
        by_worker: dict[str, list[tuple[int, int]]] = {}
        for number, worker in enumerate(self.guessing[: len(head_start.batches)]):
            pairs = [(g, i) for g in head_start.given(number) if (i := where[g]) is not None]
            by_worker[worker] = pairs
        kept = sum(len(pairs) for pairs in by_worker.values())
        started = sum(len(head_start.given(n)) for n in range(len(head_start.batches)))
        dropped = f"; {started - kept} not collected this time" if kept < started else ""
        terminal.line(
            f"orchestrator: head start: {started} tests of the last run's collection "
            f"started while collecting{dropped}"
        )
        return Given(count=len(head_start.nodeids), by_worker=by_worker)


def ray_executor(config: pytest.Config, options: RunOptions, terminal: Terminal) -> Executor:
    """The executor on Ray, with the project's files shipped where the nodes need them."""
    from orchestrator.cluster.ray_executor import RayExecutor

    shipment = None
    if needs_shipping(options.files, resolve_auto(options.address, os.environ)):
        shipment = plan_shipment(config.rootpath, config.invocation_params.dir, options.excludes)
        terminal.line(f"orchestrator: shipping the project: {shipment.describe()}")
    return RayExecutor(options.address, shipment)


def start_early(
    executor: Executor,
    options: RunOptions,
    setup: WorkerSetup,
    *,
    starting: Callable[[InitMessage], None],
    guesses: Callable[[int, int], HeadStart | None],
) -> EarlyStart:
    """Connect and launch the default workers; ``starting`` sees each init message before
    it leaves, and ``guesses(count, cpus)`` gives the head start, if there is one. The
    executor is shut down when this fails."""
    try:
        if options.address:
            info = executor.connect(local_cpus=0)
            cpus = max(1, info.cpus)
            count = min(worker_count(options.workers, cpus), cpus)
        else:
            count = worker_count(options.workers, available_cpus())
            info = executor.connect(local_cpus=max(count, available_cpus()))
        env = dict(os.environ)
        env.update(thread_env(os.environ, available_cpus(), count))
        inits = [setup.init(worker_name(i), count) for i in range(count)]
        for init in inits:
            starting(init)
        head_start = guesses(count, usable_cpus(options, info))
        if head_start is not None:
            inits = [with_guesses(init, head_start.nodeids) for init in inits]
        executor.launch(inits, env, setup.cwd)
        guessing = tuple(init["worker"] for init in inits) if head_start else ()
        started_at = None
        if head_start is not None:
            for worker, batches, asks in zip(
                guessing, head_start.batches, head_start.ask_at, strict=False
            ):
                executor.send(
                    worker, [run_message(b, a) for b, a in zip(batches, asks, strict=True)]
                )
            executor.dispatch()
            started_at = time.time()
    except BaseException:
        executor.shutdown(graceful=False)
        raise
    launched = [init["worker"] for init in inits]
    return EarlyStart(executor, info, launched, head_start, guessing, started_at)


def head_start_for(
    records: Records, root: Path, requested: int | None
) -> Callable[[int, int], HeadStart | None]:
    """The head start of ``count`` early workers on ``cpus`` CPUs: the first batches of
    what the last run with these arguments collected, when none of its files changed
    since (see orchestrator.scheduling.head_start); None where a recorded collection
    cannot stand for this run's."""

    def guesses(count: int, cpus: int) -> HeadStart | None:
        if not records.key.allowed():
            return None
        durations, entry_costs = records.durations()
        last = records.last_collection()
        if last is None or not unchanged(last, root):
            return None
        # Only ``auto`` needs the plan (the last collection's) to count the workers.
        plan = make_plan(last.nodeids, durations) if requested is None else None
        workers = worker_count(requested, cpus, plan)
        return plan_head_start(last, durations, min(count, workers), entry_costs=entry_costs)

    return guesses
