"""Pure resource logic: what a test needs, which node can give it, and worker shapes.

A test declares its needs with ``@pytest.mark.resources(gpus=1, cpus=2,
memory="8GiB", my_resource=1)``, or inherits its kind's default from
``[tool.orchestrator.resources]``. Needs are Ray resources: ``CPU``, ``GPU``,
``memory`` (bytes) and any custom resource a node declares.

Workers are shaped from the tests: one worker shape per distinct need, sized in
proportion to the work that needs it, and the rest of the cluster filled with
ordinary one-CPU workers. A worker runs any test whose needs fit inside its own
shape, preferring the tests it was shaped for, so GPU workers help with CPU tests once
the GPU tests are done and CPU tests never wait for the GPU workers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import UsageError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*\Z")


def parse_memory(value: object, where: str = "memory") -> int:
    """Bytes from ``8GiB``, ``512MB``, ``1.5G`` or a plain number of bytes."""
    if isinstance(value, bool):
        raise UsageError(f"{where}: expected a size such as '8GiB', got {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise UsageError(f"{where}: expected a size such as '8GiB' or '512MB', got {value!r}")
    if unit not in _UNITS:
        raise UsageError(f"{where}: unknown unit {unit!r} in {value!r}; use B, KB, MB, GB, GiB...")
    size = number * _UNITS[unit]
    if not math.isfinite(size) or size < 0:
        raise UsageError(f"{where}: size must be zero or more, got {value!r}")
    return round(size)


def format_memory(size: float) -> str:
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.3g}{unit}"
    return f"{int(size)}B"


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"{where}: expected a number, got {value!r}")
    if value < 0:
        raise UsageError(f"{where}: must be zero or more, got {value!r}")
    return float(value)


@dataclass(frozen=True, order=True)
class Resources:
    """What one test needs, or what one worker holds."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int = 0
    custom: tuple[tuple[str, float], ...] = field(default=())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> Resources:
        """From marker keywords or a config table; other keys are custom resources."""
        cpus, gpus, memory, custom = 1.0, 0.0, 0, {}
        for key, value in data.items():
            if key == "cpus":
                cpus = _number(value, f"{where}: cpus")
                if cpus <= 0:
                    raise UsageError(f"{where}: cpus must be more than 0, got {value!r}")
            elif key == "gpus":
                gpus = _number(value, f"{where}: gpus")
            elif key == "memory":
                memory = parse_memory(value, f"{where}: memory")
            elif key in ("CPU", "GPU", "num_cpus", "num_gpus"):
                raise UsageError(f"{where}: write cpus= and gpus= instead of {key}=")
            else:
                amount = _number(value, f"{where}: {key}")
                if amount:
                    custom[key] = amount
        return cls(cpus, gpus, memory, tuple(sorted(custom.items())))

    def merged(self, override: Mapping[str, Any], where: str) -> Resources:
        """These needs with some keys replaced (a marker over its kind's default)."""
        base: dict[str, Any] = {"cpus": self.cpus, "gpus": self.gpus, "memory": self.memory}
        base.update(self.custom)
        base.update(override)
        return Resources.from_mapping(base, where)

    def as_ray(self) -> dict[str, float]:
        """In Ray's resource names."""
        out = {"CPU": self.cpus, "GPU": self.gpus, "memory": float(self.memory)}
        out.update(self.custom)
        return {k: v for k, v in out.items() if v}

    def fits_in(self, capacity: Mapping[str, float]) -> bool:
        return all(
            capacity.get(name, 0.0) + 1e-9 >= amount for name, amount in self.as_ray().items()
        )

    def describe(self) -> str:
        parts = [f"cpus={self.cpus:g}"] if self.cpus != 1 or self == DEFAULT else []
        if self.gpus:
            parts.append(f"gpus={self.gpus:g}")
        if self.memory:
            parts.append(f"memory={format_memory(self.memory)}")
        parts.extend(f"{k}={v:g}" for k, v in self.custom)
        return ", ".join(parts)


DEFAULT = Resources()


def missing(need: Resources, nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Why no node can run a test with ``need`` (None when one can)."""
    if any(need.fits_in(node) for node in nodes):
        return None
    if not nodes:
        return "the cluster has no live nodes"
    shortfalls = []
    for name, amount in need.as_ray().items():
        best = max(node.get(name, 0.0) for node in nodes)
        if best + 1e-9 < amount:
            shown = format_memory(best) if name == "memory" else f"{best:g}"
            wanted = format_memory(amount) if name == "memory" else f"{amount:g}"
            shortfalls.append(f"{name} {wanted} (the largest node has {shown})")
    if not shortfalls:
        return "no single node has all of " + need.describe()
    return "no node of the cluster has " + ", ".join(shortfalls)


@dataclass(frozen=True)
class WorkerPlan:
    """The workers to start, and the needs that no worker can meet."""

    shapes: tuple[Resources, ...]
    #: Needs that got no worker, each with the reason.
    unplaced: dict[Resources, str]


def shape_workers(
    work: Mapping[Resources, float],
    counts: Mapping[Resources, int],
    nodes: Sequence[Mapping[str, float]],
    limit: int,
) -> WorkerPlan:
    """Choose about ``limit`` workers whose shapes cover every need that fits a node.

    Each distinct need gets a worker of its own shape unless a larger one covers it,
    even past ``limit``; more go where the work is; ordinary workers fill the rest.

    ``work`` is the estimated seconds of tests per distinct need, ``counts`` the number
    of tests per need, ``nodes`` each node's total resources. Shapes are placed best fit
    onto the nodes' capacity, so that Ray can start every worker chosen (best fit is a
    heuristic: an unusual mix of needs on uneven nodes can still leave one unplaced).
    """
    free = [dict(node) for node in nodes]
    unplaced: dict[Resources, str] = {}
    shapes: list[Resources] = []

    def place(shape: Resources) -> bool:
        if not _best_fit(free, shape):
            return False
        shapes.append(shape)
        return True

    needs: list[Resources] = []
    for need in work:
        reason = missing(need, nodes)
        if reason is None:
            needs.append(need)
        else:
            unplaced[need] = reason
    # The rarest, largest needs first: they have the fewest places to go.
    special = sorted((n for n in needs if n != DEFAULT), key=lambda n: (_demand_key(n), n))
    total = math.fsum(work[n] for n in needs) or 1.0
    for need in special:
        covered = any(need.fits_in(shape.as_ray()) for shape in shapes)
        if covered and len(shapes) >= limit:
            continue  # a larger worker runs these tests too
        # Every need gets a worker, even past the limit: a few tests must not be skipped
        # because the suite is small enough for one worker.
        if not place(need) and not covered:
            unplaced[need] = "the cluster has no room left for a worker with " + need.describe()
    # More workers where the work is, as far as counts allow, keeping a place for an
    # ordinary worker when some ordinary-sized tests fit none of the special workers.
    ordinary_left = any(
        n.fits_in(DEFAULT.as_ray()) and not any(n.fits_in(s.as_ray()) for s in shapes)
        for n in needs
        if n not in unplaced
    )
    room = limit - 1 if ordinary_left else limit
    for need in special:
        if need in unplaced:
            continue
        share = min(counts.get(need, 1), math.ceil(limit * work[need] / total))
        for _ in range(share - 1):
            if len(shapes) >= room or not place(need):
                break
    if any(need.fits_in(DEFAULT.as_ray()) for need in needs):
        while len(shapes) < limit and place(DEFAULT):
            pass
        uncovered = [
            n for n in needs if n not in unplaced and not any(n.fits_in(s.as_ray()) for s in shapes)
        ]
        if any(need.fits_in(DEFAULT.as_ray()) for need in uncovered):
            # Ordinary tests get a worker too, even past the limit (as every need does):
            # the special workers took the places and cannot run them.
            place(DEFAULT)
    for need in needs:
        if need not in unplaced and not any(need.fits_in(s.as_ray()) for s in shapes):
            unplaced[need] = "the cluster has no free CPU for a worker"
    return WorkerPlan(tuple(shapes), unplaced)


def _best_fit(free: Sequence[dict[str, float]], shape: Resources) -> bool:
    """Take ``shape`` from the free node it leaves least of, relative to the node's size;
    False where none has room."""
    need = shape.as_ray()
    fitting = [node for node in free if shape.fits_in(node)]
    if not fitting:
        return False
    node = min(
        fitting,
        key=lambda n: sum((n[k] - need.get(k, 0.0)) / max(n[k], 1.0) for k in n if n[k] > 0),
    )
    for name, amount in need.items():
        node[name] = node.get(name, 0.0) - amount
    return True


def _placeable(free: Mapping[str, Mapping[str, float]], shapes: Sequence[Resources]) -> int:
    """How many of ``shapes``, in their order, best fit places on the ``free`` capacity."""
    left = [dict(node) for node in free.values()]
    return sum(1 for shape in shapes if _best_fit(left, shape))


def adoptable(
    early: Sequence[tuple[str, str | None]],
    nodes: Mapping[str, Mapping[str, float]],
    special: Sequence[Resources],
    wanted: int,
) -> list[str]:
    """Which ordinary workers started early a run keeps: at most ``wanted``, in order.

    ``early`` pairs each early worker with the node it holds a CPU on (None where it holds
    none: a warm relay, or the run's own instance, where Ray counts nothing); ``nodes``
    gives each node's total resources, ``special`` the shaped workers still to start, in
    the order :func:`shape_workers` chose them (placed in that order, they fit).
    A worker is kept only where it leaves room for as many special shapes as there was
    without it: an early worker that sits on the only CPU of the GPU node is closed, so
    that the GPU worker can be placed there, and an ordinary one starts elsewhere.
    """
    free = {node: dict(total) for node, total in nodes.items()}
    room = _placeable(free, special)
    kept: list[str] = []
    for worker, node in early:
        if len(kept) == wanted:
            break
        if node is not None and node in free:
            trial = {n: dict(c) for n, c in free.items()}
            for name, amount in DEFAULT.as_ray().items():
                trial[node][name] = trial[node].get(name, 0.0) - amount
            if _placeable(trial, special) < room:
                continue
            free = trial
        kept.append(worker)
    return kept


def serves(shape: Resources, needs: Sequence[Resources]) -> list[int]:
    """Indices of ``needs`` a worker of ``shape`` can run, in the order it prefers them:
    its own need first, then the others from the most demanding down."""
    capacity = shape.as_ray()
    fitting = [i for i, need in enumerate(needs) if need.fits_in(capacity)]
    return sorted(fitting, key=lambda i: (needs[i] != shape, _demand_key(needs[i])))


def _demand_key(need: Resources) -> tuple[float, int, int, float]:
    return (-need.gpus, -len(need.custom), -need.memory, -need.cpus)
