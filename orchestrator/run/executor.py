"""The interface between the controller's loop and whatever runs the workers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from orchestrator.run.protocol import Message


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
    """Starts workers, carries commands to them and events back."""

    def start_workers(self, inits: Sequence[Message], env: Mapping[str, str], cwd: str) -> None:
        """Start one worker per init message (each names its worker id)."""

    def launch(self, inits: Sequence[Message], env: Mapping[str, str], cwd: str) -> None:
        """Start workers without waiting for them (see :meth:`wait_started`)."""

    def wait_started(self, workers: Sequence[str]) -> None:
        """Wait until launched workers are placed; raise a clear error if they cannot be."""

    def send(self, worker: str, commands: list[Message]) -> None:
        """Queue commands for ``worker``; they leave with its next exchange."""

    def dispatch(self) -> None:
        """Send queued commands now to every worker that is not busy answering."""

    def poll(self, timeout: float) -> list[PollResult]:
        """Send what is queued, then wait up to ``timeout`` for events from any worker."""

    def close_worker(self, worker: str, graceful: bool = True) -> None:
        """Release a worker that has finished or died (at once, without ``graceful``)."""

    def shutdown(self, graceful: bool = True) -> None:
        """Stop every worker; stop the cluster too if this executor started it."""
