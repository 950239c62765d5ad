"""Static sharding for CI fan-out: this job's share of the suite, without a Ray cluster.

Pure: the same tests and the same recorded durations give the same split on every machine.
Tests go longest first onto the shard with the least estimated work so far (ties: the lower
shard number; equal estimates: node id order), so shards end close together.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.errors import UsageError
from orchestrator.scheduling.planner import estimate

#: CI variables naming this job's place among parallel jobs: (index, total, index base).
CI_VARIABLES = (
    ("CI_NODE_INDEX", "CI_NODE_TOTAL", 1),  # GitLab (parallel: N)
    ("BUILDKITE_PARALLEL_JOB", "BUILDKITE_PARALLEL_JOB_COUNT", 0),  # Buildkite
    ("CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", 0),  # CircleCI (parallelism: N)
)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``total``."""

    index: int
    total: int
    source: str = "--shard"

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


def parse_shard(text: str, env: Mapping[str, str]) -> Shard | None:
    """``K/N`` (1 <= K <= N), or ``auto`` for the CI variables; None when ``auto`` finds
    a single job (nothing to split)."""
    if text.strip().lower() == "auto":
        return shard_from_ci(env)
    head, sep, tail = text.partition("/")
    if not sep or not head.strip().isdigit() or not tail.strip().isdigit():
        raise UsageError(
            f"--shard {text!r}: give K/N, this job's number and the number of jobs "
            "(for example --shard 2/4), or --shard auto to read them from your CI"
        )
    index, total = int(head), int(tail)
    if total < 1 or not 1 <= index <= total:
        raise UsageError(f"--shard {text}: K must be between 1 and N (N at least 1)")
    return Shard(index, total)


def shard_from_ci(env: Mapping[str, str]) -> Shard | None:
    """This job's shard from GitLab's, Buildkite's or CircleCI's variables."""
    for index_name, total_name, base in CI_VARIABLES:
        if index_name in env and total_name in env:
            index_text, total_text = env[index_name], env[total_name]
            if not (index_text.isdigit() and total_text.isdigit()):
                raise UsageError(
                    f"--shard auto: {index_name}={index_text!r} and {total_name}={total_text!r} "
                    "are not whole numbers"
                )
            total = int(total_text)
            index = int(index_text) - base + 1
            if total < 1 or not 1 <= index <= total:
                raise UsageError(
                    f"--shard auto: {index_name}={index_text} does not fit {total_name}={total}"
                )
            return Shard(index, total, f"{index_name}/{total_name}") if total > 1 else None
    names = ", ".join(f"{i}/{t}" for i, t, _ in CI_VARIABLES)
    raise UsageError(
        f"--shard auto: none of the CI variables {names} is set; give --shard K/N instead"
    )


@dataclass(frozen=True)
class Split:
    """Which shard each test goes to, and each shard's estimated seconds."""

    shard_of: tuple[int, ...]  # 1-based, one per test
    loads: tuple[float, ...]
    known: int  # tests with a recorded duration
    nodeids: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        """Short and the same in every job that computed this split; jobs that print
        different ones started from different duration stores."""
        digest = hashlib.sha256()
        for nodeid, shard in sorted(zip(self.nodeids, self.shard_of, strict=True)):
            digest.update(f"{nodeid}\t{shard}\n".encode())
        return digest.hexdigest()[:10]


def split(nodeids: Sequence[str], history: Mapping[str, float], total: int) -> Split:
    """Longest first onto the lightest shard."""
    estimates, known = estimate(nodeids, history)
    order = sorted(range(len(nodeids)), key=lambda i: (-estimates[i], nodeids[i]))
    heap = [(0.0, shard) for shard in range(1, total + 1)]
    shard_of = [0] * len(nodeids)
    loads = [0.0] * (total + 1)
    for i in order:
        load, shard = heapq.heappop(heap)
        shard_of[i] = shard
        loads[shard] = load + estimates[i]
        heapq.heappush(heap, (loads[shard], shard))
    return Split(tuple(shard_of), tuple(loads[1:]), known, tuple(nodeids))
