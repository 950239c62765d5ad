"""Which workers a run starts, by the resources its tests need (the ``resources``
marker, a kind's default): their shapes, the tests no node can run, and room for them.

The shapes come from orchestrator.scheduling.resources; this module applies them to a
run: to the nodes the executor reports. (Which workers started early a run keeps is the
controller's choice, once they are placed: see resources.adoptable.)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.errors import UsageError
from orchestrator.scheduling.resources import DEFAULT, Resources, missing, shape_workers

#: Tests named when ``--strict-resources`` refuses a run.
STRICT_SHOWN = 20


@dataclass(frozen=True)
class Placement:
    """The workers for a run's needs."""

    #: The distinct needs some node can meet (the plan's resource classes).
    needs: list[Resources] = field(default_factory=list)
    #: One shape per worker; none when every test is an ordinary one-CPU test (then
    #: every worker runs every test).
    shapes: list[Resources] = field(default_factory=list)
    #: Tests no node can run: node id -> why.
    unplaced: dict[str, str] = field(default_factory=dict)

    @property
    def shaped(self) -> bool:
        """Whether some worker has a shape other than the default."""
        return any(shape != DEFAULT for shape in self.shapes)

    def classes(self, needs: Sequence[Resources]) -> list[int]:
        """The resource class of each test of ``needs`` (none when nothing is shaped)."""
        return [self.needs.index(need) for need in needs] if self.shapes else []


def place(
    nodeids: Sequence[str],
    needs: Sequence[Resources],
    estimates: Sequence[float],
    nodes: Sequence[dict[str, float]],
    workers: int,
) -> Placement:
    """Shape about ``workers`` workers from the tests' ``needs`` (and their estimated
    seconds) on ``nodes``, and note the tests nobody can run."""
    work: dict[Resources, float] = defaultdict(float)
    counts: dict[Resources, int] = defaultdict(int)
    for index, need in enumerate(needs):
        work[need] += estimates[index]
        counts[need] += 1
    distinct = sorted(work, key=lambda n: (n != DEFAULT, n))
    if distinct == [DEFAULT]:
        reasons = {}
        shapes: list[Resources] = []
    else:
        placed = shape_workers(work, counts, nodes, workers)
        reasons = dict(placed.unplaced)
        shapes = list(placed.shapes)
    for need in distinct:
        reason = missing(need, nodes)
        if reason is not None:
            reasons[need] = reason
    unplaced = {}
    for nodeid, need in zip(nodeids, needs, strict=True):
        if need in reasons:
            unplaced[nodeid] = f"needs {need.describe()}: {reasons[need]}"
    return Placement([n for n in distinct if n not in reasons], shapes, unplaced)


def strict_error(unplaced: dict[str, str]) -> UsageError:
    """The error of ``--strict-resources`` for tests no node can run."""
    shown = "\n".join(f"  {n}: {r}" for n, r in list(unplaced.items())[:STRICT_SHOWN])
    return UsageError(
        f"{len(unplaced)} test(s) need resources this cluster cannot give "
        f"(--strict-resources):\n{shown}\n"
        "Run them on a cluster that has these resources, or drop --strict-resources "
        "to skip them."
    )


def make_room(nodes: Sequence[dict[str, float]], needs: Sequence[Resources], workers: int) -> None:
    """The instance a run starts for itself is the run's alone, and Ray does not count its
    CPUs (see ray_executor._actor_resources): it has room for one worker of every
    distinct need, as the machine is shared by the workers anyway."""
    room = math.ceil(sum(n.cpus for n in set(needs)))
    for node in nodes:
        node["CPU"] = max(node.get("CPU", 0.0), float(room), float(workers))
