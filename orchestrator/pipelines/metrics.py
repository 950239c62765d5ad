"""Pure checks of model metrics: fixed bounds and drift from the recent passing runs.

A test reports numbers (accuracy, loss, latency); a drop of a few percent from what the last
passing runs achieved is a regression even while every assertion still holds. The baseline is a
median and the noise allowance grows with the spread of the history (MAD), so one odd run neither
moves the baseline much nor makes a noisy metric fail on every run.
"""

from __future__ import annotations

import difflib
import math
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
        return cls(
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
        rel = p.rel_tolerance * abs(self.baseline)
        spread = mad(self.history) if self.history else 0.0
        how = (
            f"max({p.rel_tolerance:g} x |baseline| = {fmt(rel)}, abs {fmt(p.abs_tolerance)}, "
            f"{p.mad_k:g} x MAD {fmt(spread)} = {fmt(p.mad_k * spread)})"
        )
        last = ", ".join(fmt(v) for v in self.history[-SHOWN_VALUES:])
        return (
            f"{self.name} = {fmt(self.value)} is worse than its baseline {fmt(self.baseline)} "
            f"(median of the last {len(self.history)} passing runs) by {worse}; "
            f"tolerance {fmt(self.tolerance)} = {how}\n"
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
) -> Drift | None:
    """Compare ``value`` with the median of the last ``policy.window`` passing values.

    ``history`` runs oldest to newest; values that are not finite are left out (they say
    nothing about a typical run). Without ``policy.min_history`` values nothing is checked.
    A NaN value drifts whenever there is a baseline: a metric that stopped being a number is
    a regression.
    """
    recent = tuple(float(v) for v in history if math.isfinite(v))[-policy.window :]
    if not recent or len(recent) < policy.min_history:
        return None
    baseline = median(recent)
    tolerance = max(
        policy.rel_tolerance * abs(baseline), policy.abs_tolerance, policy.mad_k * mad(recent)
    )
    drift = Drift(name, value, baseline, tolerance, higher_is_better, recent, policy)
    if math.isnan(value) or drift.worse_by > tolerance:
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
    "MetricPolicy",
    "check_bounds",
    "check_drift",
    "fmt",
    "mad",
    "median",
    "sparkline",
]
