"""Pure checks of model metrics: fixed bounds and drift from the recent passing runs.

A test reports numbers (accuracy, loss, latency); a drop of a few percent from what the last
passing runs achieved is a regression even while every assertion still holds. The baseline is a
median and the noise allowance grows with the spread of the history (MAD), so one odd run neither
moves the baseline much nor makes a noisy metric fail on every run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import random
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from orchestrator.errors import UsageError

#: What a drift does to the run: fail the test, or only report it.
ON_DRIFT = ("fail", "warn")
#: Last values a drift message shows.
SHOWN_VALUES = 5
_BLOCKS = "▁▂▃▄▅▆▇█"


def fmt(value: float) -> str:
    """A number in at most 4 significant digits: ``0.9123``, ``1.235e+04``, ``nan``."""
    return f"{value:.4g}"


def median(values: Iterable[float]) -> float:
    """The median of ``values`` (the mean of the middle two for an even count)."""
    return float(statistics.median(values))


def mad(values: Iterable[float]) -> float:
    """Median absolute deviation from the median, unscaled (0 for a constant series)."""
    data = list(values)
    centre = median(data)
    return median(abs(v - centre) for v in data)


def _expect(where: str, key: str, value: object, expected: str) -> UsageError:
    if isinstance(value, str):
        shown = f'"{value}"'
    elif isinstance(value, bool):
        shown = str(value).lower()
    else:
        shown = repr(value)
    return UsageError(f"{where}: {key} = {shown} is not valid; expected {expected}")


def _number(where: str, key: str, value: object) -> float:
    # TOML booleans are Python ints; `rel_tolerance = true` is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _expect(where, key, value, "a number of 0 or more")
    if not math.isfinite(value) or value < 0:
        raise _expect(where, key, value, "a number of 0 or more")
    return float(value)


def _count(where: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _expect(where, key, value, "a whole number of 1 or more")
    return value


@dataclass(frozen=True)
class MetricPolicy:
    """How far a metric may fall behind its recent passing runs before it counts as drift."""

    window: int = 10  # baseline = median of the last `window` passing runs
    min_history: int = 3  # fewer earlier values -> no drift check
    rel_tolerance: float = 0.05
    abs_tolerance: float = 0.0
    mad_k: float = 3.0  # k x MAD (median absolute deviation, unscaled) of the history
    on_drift: str = "fail"  # "fail" or "warn"
    #: With several values per metric: the confidence a drop must be beyond the gate at.
    confidence: float = 0.95
    #: Gates by metric name (see :func:`parse_gate`), from ``[tool.orchestrator.metrics.gates]``.
    gates: tuple[tuple[str, str], ...] = ()

    def gate_of(self, name: str) -> str | None:
        return dict(self.gates).get(name)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], where: str = "[tool.orchestrator.metrics]"
    ) -> MetricPolicy:
        """Validate a TOML table; a bad entry raises a :class:`UsageError` naming ``where``."""
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise UsageError(
                    f"{where}: unknown key {key!r}; {hint}expected one of: {', '.join(known)}"
                )
        default = cls()
        window = _count(where, "window", data.get("window", default.window))
        min_history = _count(where, "min_history", data.get("min_history", default.min_history))
        if min_history > window:
            raise UsageError(
                f"{where}: min_history = {min_history} is larger than window = {window}, so no "
                "metric would ever be checked; expected min_history <= window"
            )
        on_drift = data.get("on_drift", default.on_drift)
        if on_drift not in ON_DRIFT:
            raise _expect(where, "on_drift", on_drift, '"fail" or "warn"')
        confidence = data.get("confidence", default.confidence)
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            raise _expect(where, "confidence", confidence, "a number between 0.5 and 1")
        if not 0.5 <= confidence < 1:
            raise _expect(where, "confidence", confidence, "a number from 0.5 to below 1")
        gates = data.get("gates", {})
        if not isinstance(gates, Mapping):
            raise _expect(where, "gates", gates, 'a table of gates, e.g. { auc = "-1%" }')
        for name, gate in gates.items():
            parse_gate(gate, f"{where} gates.{name}")
        return cls(
            confidence=float(confidence),
            gates=tuple(sorted((str(k), str(v)) for k, v in gates.items())),
            window=window,
            min_history=min_history,
            rel_tolerance=_number(
                where, "rel_tolerance", data.get("rel_tolerance", default.rel_tolerance)
            ),
            abs_tolerance=_number(
                where, "abs_tolerance", data.get("abs_tolerance", default.abs_tolerance)
            ),
            mad_k=_number(where, "mad_k", data.get("mad_k", default.mad_k)),
            on_drift=str(on_drift),
        )


_GATE = re.compile(r"\s*([+-])\s*([0-9]*\.?[0-9]+)\s*(%|ms|us|µs|s)?\s*\Z")
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}


@dataclass(frozen=True)
class Gate:
    """How far a metric may move the wrong way from its baseline: ``-1%`` (a relative
    drop), ``-0.02`` (an absolute drop), ``+10ms`` (a rise, in seconds). The sign says
    which way is worse: ``-`` when higher is better, ``+`` when lower is."""

    text: str
    amount: float
    relative: bool
    higher_is_better: bool

    def tolerance(self, baseline: float) -> float:
        return self.amount * abs(baseline) if self.relative else self.amount


def parse_gate(text: object, where: str) -> Gate:
    """A :class:`Gate` from its text; a :class:`UsageError` naming ``where`` otherwise."""
    match = _GATE.match(text) if isinstance(text, str) else None
    if match is None or not isinstance(text, str):
        raise UsageError(
            f"{where}: gate {text!r} is not valid; expected a signed change such as "
            '"-1%" (a relative drop), "-0.02" (an absolute drop) or "+10ms" (a rise, the '
            "metric in seconds); - when higher is better, + when lower is"
        )
    sign, number, unit = match.groups()
    amount = float(number)
    relative = unit == "%"
    if relative:
        amount /= 100
    elif unit:
        amount *= _SECONDS[unit]
    return Gate(text.strip(), amount, relative, sign == "-")


def bootstrap_interval(
    current: Sequence[float],
    baseline: Sequence[float],
    level: float,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """A ``level`` confidence interval (percentile bootstrap) of ``median(current) -
    median(baseline)``; the same inputs always give the same interval."""
    rng = random.Random(seed)
    a, b = list(current), list(baseline)
    diffs = sorted(
        median(rng.choices(a, k=len(a))) - median(rng.choices(b, k=len(b)))
        for _ in range(resamples)
    )
    tail = (1 - level) / 2
    lo = diffs[int(tail * (resamples - 1))]
    hi = diffs[math.ceil((1 - tail) * (resamples - 1))]
    return lo, hi


@dataclass(frozen=True)
class Drift:
    """A metric that is worse than its baseline by more than the tolerance allows."""

    name: str
    value: float
    baseline: float
    tolerance: float
    higher_is_better: bool
    history: tuple[float, ...]  # the values the baseline came from, oldest first
    policy: MetricPolicy = field(default_factory=MetricPolicy)
    #: The gate that set the tolerance, if one did.
    gate: Gate | None = None
    #: Where the baseline comes from: "last" (the last passing runs) or a branch, tag, commit.
    ref: str = "last"
    #: With several values on both sides: the confidence interval of how much worse the
    #: median is, at ``policy.confidence``.
    interval: tuple[float, float] | None = None

    @property
    def worse_by(self) -> float:
        """How far the value is on the wrong side of the baseline (negative when better)."""
        diff = self.baseline - self.value
        return diff if self.higher_is_better else -diff

    def message(self) -> str:
        """What drifted, from what, by how much, and how the allowance was worked out."""
        direction = "higher" if self.higher_is_better else "lower"
        worse = fmt(self.worse_by)
        if self.baseline != 0 and math.isfinite(self.worse_by):
            worse += f" ({abs(self.worse_by / self.baseline):.1%})"
        p = self.policy
        if self.gate is not None:
            how = f"the gate {self.gate.text}"
        else:
            rel = p.rel_tolerance * abs(self.baseline)
            spread = mad(self.history) if self.history else 0.0
            how = (
                f"max({p.rel_tolerance:g} x |baseline| = {fmt(rel)}, abs "
                f"{fmt(p.abs_tolerance)}, {p.mad_k:g} x MAD {fmt(spread)} = "
                f"{fmt(p.mad_k * spread)})"
            )
        last = ", ".join(fmt(v) for v in self.history[-SHOWN_VALUES:])
        where = "" if self.ref == "last" else f" at {self.ref}"
        significant = ""
        if self.interval is not None:
            lo, hi = self.interval
            significant = (
                f"; worse by {fmt(lo)} to {fmt(hi)} ({p.confidence:.0%} confidence "
                "interval of the difference of medians, bootstrap), all of it beyond the "
                "tolerance"
            )
        return (
            f"{self.name} = {fmt(self.value)} is worse than its baseline {fmt(self.baseline)} "
            f"(median of the last {len(self.history)} passing runs{where}) by {worse}; "
            f"tolerance {fmt(self.tolerance)} = {how}{significant}\n"
            f"  {direction} is better; last values: {last}"
        )


def check_bounds(
    name: str, value: float, minimum: float | None, maximum: float | None
) -> str | None:
    """A message when ``value`` lies outside [minimum, maximum] or is NaN, else None."""
    if math.isnan(value):
        return f"{name} is NaN; expected {_range(minimum, maximum)}"
    if minimum is not None and value < minimum:
        return f"{name} = {fmt(value)} is below the minimum {fmt(minimum)}"
    if maximum is not None and value > maximum:
        return f"{name} = {fmt(value)} is above the maximum {fmt(maximum)}"
    return None


def _range(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"a number from {fmt(minimum)} to {fmt(maximum)}"
    if minimum is not None:
        return f"a number of at least {fmt(minimum)}"
    if maximum is not None:
        return f"a number of at most {fmt(maximum)}"
    return "a number"


def check_drift(
    name: str,
    value: float,
    history: Sequence[float],
    policy: MetricPolicy,
    *,
    higher_is_better: bool = True,
    gate: Gate | None = None,
    samples: Sequence[float] = (),
    baseline_samples: Sequence[float] = (),
    ref: str = "last",
) -> Drift | None:
    """Compare ``value`` with the median of the last ``policy.window`` passing values.

    ``history`` runs oldest to newest; values that are not finite are left out (they say
    nothing about a typical run). Without ``policy.min_history`` values nothing is checked.
    A NaN value drifts whenever there is a baseline: a metric that stopped being a number is
    a regression.
    """
    recent = tuple(float(v) for v in history if math.isfinite(v))[-policy.window :]
    current = [float(v) for v in samples if math.isfinite(v)]
    pooled = [float(v) for v in baseline_samples if math.isfinite(v)]
    noisy = len(current) >= 2 and len(pooled) >= 2
    if not recent or (len(pooled) if noisy else len(recent)) < policy.min_history:
        return None
    baseline = median(recent)
    if gate is not None:
        tolerance = gate.tolerance(baseline)
    else:
        tolerance = max(
            policy.rel_tolerance * abs(baseline), policy.abs_tolerance, policy.mad_k * mad(recent)
        )
    drift = Drift(name, value, baseline, tolerance, higher_is_better, recent, policy, gate, ref)
    if math.isnan(value):
        return drift
    if noisy:
        lo, hi = bootstrap_interval(current, pooled, policy.confidence)
        # How much worse the median is: the interval of the difference, the right way round.
        worse = (-hi, -lo) if higher_is_better else (lo, hi)
        if worse[0] > tolerance:
            return dataclasses.replace(drift, interval=worse)
        return None
    if drift.worse_by > tolerance:
        return drift
    return None


def sparkline(values: Sequence[float]) -> str:
    """One block per value, low to high: ``▁▃█``; a flat series sits in the middle."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return " " * len(values)
    lo, hi = min(finite), max(finite)
    span = hi - lo
    if not math.isfinite(span):  # e.g. -1e308 .. 1e308: scale down before subtracting
        lo, span = lo / 2, hi / 2 - lo / 2
        values = [v / 2 for v in values]
    out = []
    for v in values:
        if not math.isfinite(v):
            out.append(" ")
        elif span == 0:
            out.append(_BLOCKS[3])
        else:
            step = int((v - lo) / span * (len(_BLOCKS) - 1) + 0.5)
            out.append(_BLOCKS[min(len(_BLOCKS) - 1, max(0, step))])
    return "".join(out)


__all__ = [
    "ON_DRIFT",
    "Drift",
    "Gate",
    "MetricPolicy",
    "bootstrap_interval",
    "check_bounds",
    "check_drift",
    "fmt",
    "mad",
    "median",
    "parse_gate",
    "sparkline",
]
