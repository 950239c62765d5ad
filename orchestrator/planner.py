"""Pure planning: estimate each test's duration and order the suite longest first."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Estimate for a test when nothing at all is known about the suite.
DEFAULT_SECONDS = 0.1


@dataclass(frozen=True)
class Plan:
    """The tests of one run, their estimated durations, and the order to hand them out."""

    nodeids: tuple[str, ...]
    estimates: tuple[float, ...]
    #: Indices into ``nodeids``, longest estimate first, ties in collection order.
    order: tuple[int, ...]
    #: How many tests had a recorded duration of their own.
    known: int
    #: Each test's resource class (an index into the run's distinct needs); empty when
    #: every test can run on every worker.
    classes: tuple[int, ...] = ()

    def class_of(self, index: int) -> int:
        return self.classes[index] if self.classes else 0

    @property
    def total(self) -> float:
        return math.fsum(self.estimates)

    @property
    def longest(self) -> float:
        return max(self.estimates, default=0.0)


def junit_key(nodeid: str) -> str:
    """The key of a test as a JUnit report names it (``classname::name``).

    Durations imported from JUnit files are stored under this key, since a JUnit
    report does not carry the node id itself.
    """
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return "junit:" + ".".join(names[:-1]) + "::" + names[-1]


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def estimate(nodeids: Sequence[str], history: Mapping[str, float]) -> tuple[list[float], int]:
    """Estimated seconds per test: its own history, else its file's mean, else the suite's."""
    own: list[float | None] = []
    per_file: dict[str, list[float]] = defaultdict(list)
    for nodeid in nodeids:
        value = history.get(nodeid)
        if value is None:
            value = history.get(junit_key(nodeid))
        own.append(value)
        if value is not None:
            per_file[_file_of(nodeid)].append(value)
    known_values = [v for v in own if v is not None]
    suite_mean = math.fsum(known_values) / len(known_values) if known_values else DEFAULT_SECONDS
    file_mean = {f: math.fsum(vs) / len(vs) for f, vs in per_file.items()}
    estimates = [
        v if v is not None else file_mean.get(_file_of(n), suite_mean)
        for n, v in zip(nodeids, own, strict=True)
    ]
    return [max(0.0, e) for e in estimates], len(known_values)


def make_plan(
    nodeids: Sequence[str], history: Mapping[str, float], classes: Sequence[int] = ()
) -> Plan:
    """Plan a run: the same inputs always give the same plan."""
    if classes and len(classes) != len(nodeids):
        raise ValueError("one resource class per test, or none at all")
    estimates, known = estimate(nodeids, history)
    # Longest first; a stable sort keeps equal estimates in collection order, reversed too.
    order = sorted(range(len(nodeids)), key=estimates.__getitem__, reverse=True)
    return Plan(tuple(nodeids), tuple(estimates), tuple(order), known, tuple(classes))


def auto_workers(plan: Plan, cpus: int, startup_seconds: float) -> int:
    """Workers for ``auto``: one per core, but none that would work less than its start-up."""
    if not plan.nodeids:
        return 1
    useful = math.ceil(plan.total / max(startup_seconds, 1e-9))
    return max(1, min(cpus, len(plan.nodeids), useful))
