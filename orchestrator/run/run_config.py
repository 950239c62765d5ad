"""What a run is configured with: how its workers start, and the controller's settings.

:class:`WorkerSetup` is known before the suite is collected (workers start while the
controller collects); :class:`RunConfig` once the plan exists. The pytest plugin builds
both; tests build them by hand.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.config import thread_env
from orchestrator.run.protocol import InitMessage
from orchestrator.scheduling.head_start import Given
from orchestrator.scheduling.resources import DEFAULT, Resources
from orchestrator.scheduling.retry import RetryPolicy
from orchestrator.worker.recycle import RecyclePolicy


def worker_name(number: int) -> str:
    """The name of the run's ``number``-th worker, as pytest-xdist names its workers
    (plugins that isolate databases or ports per worker read it)."""
    return f"gw{number}"


def no_timeout(index: int) -> float | None:
    """No test has a time limit."""
    return None


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker of a run starts with."""

    #: pytest's command line, as the controller was given it.
    args: tuple[str, ...] = ()
    #: The directory the workers run in.
    cwd: str = "."
    #: The run's id, as pytest-xdist's ``testrunuid``.
    testrunuid: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: The run's temporary directory; each worker gets its own inside it.
    basetemp: str | None = None
    #: When a worker hands its place to a fresh one (see orchestrator.worker.recycle).
    recycle: RecyclePolicy | None = None

    def init(
        self,
        worker: str,
        workercount: int,
        shape: Resources | None = None,
    ) -> InitMessage:
        """The message that starts ``worker``, one of ``workercount``. Its tests follow
        in a ``tests`` message, so that it can start (and collect) before the controller
        has collected."""
        init: InitMessage = {
            "t": "init",
            "worker": worker,
            "args": list(self.args),
            "workercount": workercount,
            "testrunuid": self.testrunuid,
            "nice": os.getpriority(os.PRIO_PROCESS, 0),
            # One temporary directory per worker, under the run's own (as pytest-xdist).
            "basetemp": os.path.join(self.basetemp, worker) if self.basetemp else None,
        }
        if self.recycle is not None and self.recycle.enabled:
            init["recycle"] = self.recycle.as_message()
        if shape is not None and shape != DEFAULT:
            init["resources"] = shape.as_ray()
            if shape.cpus >= 2:  # its own thread caps, unless the user set them
                init["env"] = thread_env(os.environ, int(shape.cpus), 1)
        return init


def with_guesses(init: InitMessage, guesses: Sequence[str]) -> InitMessage:
    """``init`` for an early worker that starts with a head start's ``guesses`` (see
    orchestrator.scheduling.head_start); the controller's own tests follow them."""
    return {**init, "nodeids": list(guesses), "guessed": len(guesses)}


@dataclass(frozen=True)
class RunConfig:
    """The controller's settings for one run of one plan."""

    #: How many workers to run (ignored when ``shapes`` are given: one per shape).
    workers: int
    setup: WorkerSetup = field(default_factory=WorkerSetup)
    #: The workers' environment.
    env: Mapping[str, str] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Test index -> the controller's hard limit in seconds, or None.
    timeout: Callable[[int], float | None] = no_timeout
    #: Replacements for workers lost with no test to blame (None: the run's worker count,
    #: at least 4).
    max_replacements: int | None = None
    #: The distinct resource needs (the plan's classes index them) and the workers'
    #: shapes; without them every worker runs every test.
    needs: Sequence[Resources] = ()
    shapes: Sequence[Resources] = ()
    #: What reaches every worker's ``config.workerinput``.
    workerinput: Mapping[str, Any] = field(default_factory=dict)
    #: Workers the executor started already, with the default shape, while the suite was
    #: collected (named by :func:`worker_name` from 0): they take the places of default
    #: workers, and those not needed are closed.
    launched: Sequence[str] = ()
    #: The recorded costs of entering each test file (see
    #: :class:`orchestrator.scheduling.scheduler.Scheduler`).
    entry_costs: Mapping[str, float] | None = None
    #: The tests the launched workers were given before the plan existed (see
    #: orchestrator.scheduling.head_start).
    head_start: Given | None = None
