"""The interface between a run and whatever runs its workers.

The controller and the pytest plugin use an executor only through :class:`Executor`, so
both run against a fake one in the fast tests; the one that uses Ray is
:class:`orchestrator.cluster.ray_executor.RayExecutor`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from orchestrator.run.protocol import Command, InitMessage, Message


@dataclass(frozen=True)
class WorkerLost:
    """A worker's host process is gone (killed actor, lost node); its message says how."""

    message: str


@dataclass(frozen=True)
class ClusterInfo:
    """Where the workers run, for the start-up line and the summary."""

    description: str
    cpus: int


#: One poll result: a worker and its new events, or the news that it was lost.
PollResult = tuple[str, "list[bytes | Message] | WorkerLost"]


class Executor(Protocol):
    """Connects to the cluster, starts workers, carries commands to them and events back."""

    # -- the cluster -----------------------------------------------------------------
    def connect(self, local_cpus: int) -> ClusterInfo:
        """Join the cluster, or start one of ``local_cpus`` CPUs for this run."""

    def node_resources(self) -> dict[str, dict[str, float]]:
        """Total resources of each live node (``CPU``, ``GPU``, ``memory``, ...), by the
        node's id."""

    def worker_nodes(self, workers: Sequence[str]) -> dict[str, str | None]:
        """The node (its id) each of these placed workers holds a CPU on; None for one
        that holds none (a warm relay; any worker of the instance a run starts for itself,
        where Ray counts no CPUs) or whose node cannot be told."""

    @property
    def leased(self) -> int:
        """How many workers run in warm relays kept by ``orchestrator up``."""

    # -- workers ---------------------------------------------------------------------
    def launch(self, inits: Sequence[InitMessage], env: Mapping[str, str], cwd: str) -> None:
        """Start one worker per init message (each names its worker), without waiting
        for them (see :meth:`wait_started`)."""

    def wait_started(self, workers: Sequence[str]) -> None:
        """Wait until launched workers are placed; raise a clear error if they cannot be."""

    def send(self, worker: str, commands: Sequence[Command]) -> None:
        """Queue commands for ``worker``; they leave with its next exchange."""

    def dispatch(self) -> None:
        """Send queued commands now to every worker that is not busy answering."""

    def poll(self, timeout: float) -> list[PollResult]:
        """Send what is queued, then wait up to ``timeout`` for events from any worker."""

    def close_worker(self, worker: str, graceful: bool = True) -> None:
        """Release a worker that has finished or died (at once, without ``graceful``)."""

    # -- the end ---------------------------------------------------------------------
    def shutdown(self, graceful: bool = True, *, wait: bool = True) -> None:
        """Stop every worker (letting their sessions finish when ``graceful``), and the
        cluster if this executor started it; safe to call again. Without ``wait`` the
        disconnection goes on while the caller writes its reports (see
        :meth:`wait_closed`)."""

    def wait_closed(self) -> None:
        """Return once a disconnection started by ``shutdown(wait=False)`` is over."""
