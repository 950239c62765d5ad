"""The run's machine-readable report (``--json``) and the data behind the HTML one.

Schema ``orchestrator-report/1`` (documented in docs/ci.md; fields are only ever added):

- ``schema``, ``created`` (ISO 8601), ``started`` (epoch seconds of the session's start),
  ``command`` (pytest's arguments), ``rootdir``,
  ``where`` (the cluster, or ``null`` for a plain pytest run), ``workers``, ``wall``
  (seconds), ``exit_status`` (pytest's exit code), ``lost_workers`` (descriptions),
  ``recycled_workers`` (each worker replaced at its recycling limit, and why);
- ``totals``: ``tests`` and a count per outcome (``passed``, ``failed``, ``error``,
  ``skipped``, ``xfailed``, ``xpassed``) plus ``flaky``;
- ``kinds``: per test kind that ran: ``kind``, ``pipeline``, ``tests``, the outcome counts,
  ``flaky``, ``seconds``;
- ``tests``: per test: ``nodeid``, ``kind``, ``pipeline``, ``outcome``, ``duration``
  (setup + call + teardown, seconds), ``worker``, ``start``/``stop`` (epoch seconds of its
  final attempt, from the clock of the machine that ran it), ``attempts``, ``flaky``,
  ``message`` (the failure's last line), ``longrepr`` (its full text), ``earlier`` (earlier
  attempts: ``worker``, ``outcome``, ``message``, ``start``, ``stop``) and ``metrics``
  (``name``, ``value``, ``higher_is_better``, ``baseline``, ``history``: earlier passing
  values, oldest first).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.pipelines.kinds import KINDS, pipeline_of
from orchestrator.pipelines.metrics import median

SCHEMA = "orchestrator-report/1"
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


@dataclass
class TestRecord:
    """What the report says about one test."""

    __test__ = False  # not a test class, whatever its name

    nodeid: str
    kind: str = "unit"
    outcome: str = "passed"
    duration: float = 0.0
    worker: str | None = None
    start: float | None = None
    stop: float | None = None
    attempts: int = 1
    flaky: bool = False
    message: str | None = None
    longrepr: str | None = None
    earlier: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "kind": self.kind,
            "pipeline": pipeline_of(self.kind),
            "outcome": self.outcome,
            "duration": round(self.duration, 6),
            "worker": self.worker,
            "start": self.start,
            "stop": self.stop,
            "attempts": self.attempts,
            "flaky": self.flaky,
            "message": self.message,
            "longrepr": self.longrepr,
            "earlier": self.earlier,
            "metrics": self.metrics,
        }


def failure_message(text: str) -> str:
    """The line that says what went wrong: pytest's first ``E`` line, else the last line."""
    lines = [line for line in text.splitlines() if line.strip()]
    explained = [line[1:].strip() for line in lines if line.startswith("E ")]
    return explained[0] if explained else (lines[-1].strip() if lines else "")


def metric_entries(
    recorded: Sequence[Mapping[str, Any]], history: Mapping[str, Sequence[float]], window: int
) -> list[dict[str, Any]]:
    """A test's recorded metrics with their earlier values and baseline (their median)."""
    out = []
    for metric in recorded:
        name = str(metric["name"])
        earlier = [float(v) for v in history.get(name, ())][-window:]
        out.append(
            {
                "name": name,
                "value": float(metric["value"]),
                "higher_is_better": bool(metric.get("higher_is_better", True)),
                "baseline": median(earlier) if earlier else None,
                "history": earlier,
            }
        )
    return out


def build(
    tests: Sequence[TestRecord],
    *,
    command: Sequence[str],
    rootdir: str,
    where: str | None,
    workers: int,
    wall: float,
    exit_status: int,
    lost_workers: Sequence[str] = (),
    recycled_workers: Sequence[str] = (),
    created: float | None = None,
    started: float | None = None,
    flake_history: Sequence[Mapping[str, Any]] = (),
    metrics_baseline: str = "last",
) -> dict[str, Any]:
    """The report as a JSON-ready dict; ``flake_history`` holds the tests that flaked in
    their recorded runs (see :func:`flake_history`)."""
    totals: Counter[str] = Counter()
    per_kind: dict[str, Counter[str]] = {}
    seconds: dict[str, float] = {}
    for test in tests:
        totals[test.outcome] += 1
        totals["flaky"] += test.flaky
        counts = per_kind.setdefault(test.kind, Counter())
        counts[test.outcome] += 1
        counts["flaky"] += test.flaky
        seconds[test.kind] = seconds.get(test.kind, 0.0) + test.duration
    order = [k for k in KINDS if k in per_kind] + sorted(set(per_kind) - set(KINDS))
    kinds = [
        {
            "kind": kind,
            "pipeline": pipeline_of(kind),
            "tests": sum(per_kind[kind][o] for o in OUTCOMES),
            **{o: per_kind[kind][o] for o in OUTCOMES},
            "flaky": per_kind[kind]["flaky"],
            "seconds": round(seconds[kind], 6),
        }
        for kind in order
    ]
    stamp = time.time() if created is None else created
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(stamp)),
        "command": list(command),
        "rootdir": rootdir,
        "where": where,
        "workers": workers,
        "started": started,
        "wall": round(wall, 6),
        "exit_status": exit_status,
        "lost_workers": list(lost_workers),
        "recycled_workers": list(recycled_workers),
        "totals": {
            "tests": len(tests),
            **{o: totals[o] for o in OUTCOMES},
            "flaky": totals["flaky"],
        },
        "kinds": kinds,
        "tests": [t.as_dict() for t in tests],
        "flake_history": [dict(f) for f in flake_history],
        "metrics_baseline": metrics_baseline,
    }


#: Runs the flake rate over time is averaged over, at each run.
FLAKE_ROLLING = 5


def flake_series(run_ids: Sequence[int], flaked: Sequence[int]) -> list[float]:
    """A test's flake rate over time: at each of its runs, the share of flaked runs among
    it and the ones before it, up to :data:`FLAKE_ROLLING`."""
    hits = set(flaked)
    marks = [1.0 if run_id in hits else 0.0 for run_id in run_ids]
    return [
        sum(marks[max(0, i + 1 - FLAKE_ROLLING) : i + 1]) / min(i + 1, FLAKE_ROLLING)
        for i in range(len(marks))
    ]


def to_json(report: Mapping[str, Any]) -> str:
    """Strict JSON: NaN and infinities (a metric can be one) become ``null``."""
    return json.dumps(_strict(report), indent=1, allow_nan=False) + "\n"


def _strict(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value
