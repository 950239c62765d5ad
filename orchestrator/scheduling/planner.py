"""Pure planning: estimate each test's duration and order the suite longest first.

A plan also knows where pytest would tear fixtures down anyway between two tests that
follow each other in collection order (a new file, class, or parameter of a fixture
scoped to the module or class): the scheduler lets a worker join another's file only at
such a boundary, so that no group is set up twice when it can be avoided.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
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
    #: Per test, the number of the fixture group it belongs to: a run of collection order
    #: that pytest sets up once (one file, class and parameter of higher-scoped fixtures).
    #: Tests of one group are consecutive; a new number starts a new group.
    groups: tuple[int, ...] = ()

    def class_of(self, index: int) -> int:
        return self.classes[index] if self.classes else 0

    def starts_group(self, index: int) -> bool:
        """Does test ``index`` start a fixture group (pytest tears down before it)?"""
        return index == 0 or self.groups[index] != self.groups[index - 1]

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


def group_key(nodeid: str) -> str:
    """A test's fixture group as its node id shows it: its file and class."""
    return nodeid.rsplit("::", 1)[0]


def number_groups(keys: Sequence[Hashable]) -> tuple[int, ...]:
    """Number the runs of equal consecutive ``keys``: 0, 0, 1, 1, 1, 2, ..."""
    numbers: list[int] = []
    last: Hashable = object()
    current = -1
    for key in keys:
        if key != last:
            current += 1
            last = key
        numbers.append(current)
    return tuple(numbers)


def make_plan(
    nodeids: Sequence[str],
    history: Mapping[str, float],
    classes: Sequence[int] = (),
    groups: Sequence[Hashable] = (),
) -> Plan:
    """Plan a run: the same inputs always give the same plan.

    ``nodeids`` are in pytest's collection order. ``groups`` holds each test's fixture
    group key (see :attr:`Plan.groups`); without, file and class from the node id.
    """
    if classes and len(classes) != len(nodeids):
        raise ValueError("one resource class per test, or none at all")
    if groups and len(groups) != len(nodeids):
        raise ValueError("one fixture group per test, or none at all")
    estimates, known = estimate(nodeids, history)
    # Longest first; a stable sort keeps equal estimates in collection order, reversed too.
    order = sorted(range(len(nodeids)), key=estimates.__getitem__, reverse=True)
    numbers = number_groups(groups or [group_key(n) for n in nodeids])
    return Plan(tuple(nodeids), tuple(estimates), tuple(order), known, tuple(classes), numbers)


def auto_workers(plan: Plan, cpus: int, startup_seconds: float) -> int:
    """Workers for ``auto``: one per core, but none that would work less than its start-up."""
    if not plan.nodeids:
        return 1
    useful = math.ceil(plan.total / max(startup_seconds, 1e-9))
    return max(1, min(cpus, len(plan.nodeids), useful))
