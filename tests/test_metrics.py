"""Metric bounds, drift from the recent passing runs, and the policy that configures it."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import UsageError
from orchestrator.pipelines.metrics import (
    Drift,
    MetricPolicy,
    check_bounds,
    check_drift,
    mad,
    median,
    sparkline,
)

# -- policy -----------------------------------------------------------------------------


def test_policy_defaults_and_full_table() -> None:
    assert MetricPolicy.from_mapping({}) == MetricPolicy()
    policy = MetricPolicy.from_mapping(
        {
            "window": 20,
            "min_history": 5,
            "rel_tolerance": 0.1,
            "abs_tolerance": 1,
            "mad_k": 0,
            "on_drift": "warn",
        }
    )
    assert policy == MetricPolicy(20, 5, 0.1, 1.0, 0.0, "warn")
    assert isinstance(policy.abs_tolerance, float)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"window": 0}, "window = 0 is not valid; expected a whole number of 1 or more"),
        ({"window": "10"}, 'window = "10" is not valid; expected a whole number'),
        ({"window": 2.5}, "window = 2.5 is not valid"),
        ({"min_history": True}, "min_history = true is not valid"),
        ({"rel_tolerance": -0.1}, "rel_tolerance = -0.1 is not valid; expected a number of 0"),
        ({"abs_tolerance": float("nan")}, "abs_tolerance = nan is not valid"),
        ({"mad_k": False}, "mad_k = false is not valid"),
        ({"on_drift": "explode"}, 'on_drift = "explode" is not valid; expected "fail" or "warn"'),
        ({"window": 3, "min_history": 5}, "min_history = 5 is larger than window = 3"),
        ({"rel_tolerence": 0.1}, "unknown key 'rel_tolerence'; did you mean 'rel_tolerance'?"),
        ({"colour": 1}, "unknown key 'colour'; expected one of: window, min_history"),
    ],
)
def test_policy_errors_say_where_what_and_what_is_expected(
    table: dict[str, Any], expected: str
) -> None:
    with pytest.raises(UsageError) as info:
        MetricPolicy.from_mapping(table, where="pyproject.toml [tool.orchestrator.metrics]")
    message = str(info.value)
    assert message.startswith("pyproject.toml [tool.orchestrator.metrics]: ")
    assert expected in message


# -- bounds -----------------------------------------------------------------------------


def test_bounds() -> None:
    assert check_bounds("accuracy", 0.9, 0.8, 1.0) is None
    assert check_bounds("accuracy", 0.8, 0.8, None) is None  # the bound itself is allowed
    assert check_bounds("loss", 5.0, None, None) is None
    assert check_bounds("accuracy", 0.7, 0.8, 1.0) == "accuracy = 0.7 is below the minimum 0.8"
    assert check_bounds("loss", 2.5, None, 1.0) == "loss = 2.5 is above the maximum 1"
    assert (
        check_bounds("loss", math.nan, None, 1.0) == "loss is NaN; expected a number of at most 1"
    )
    assert check_bounds("x", math.nan, None, None) == "x is NaN; expected a number"
    message = check_bounds("x", math.nan, 0.0, 1.0)
    assert message is not None and "from 0 to 1" in message


# -- drift ------------------------------------------------------------------------------

STRICT = MetricPolicy(window=5, min_history=3, rel_tolerance=0.0, abs_tolerance=0.0, mad_k=0.0)


def test_too_little_history_is_not_checked() -> None:
    assert check_drift("acc", 0.0, [0.9, 0.9], STRICT) is None
    assert check_drift("acc", 0.0, [], STRICT) is None
    # values that are not numbers do not count as history
    assert check_drift("acc", 0.0, [0.9, math.nan, 0.9, math.inf], STRICT) is None
    assert check_drift("acc", 0.0, [0.9, 0.9, 0.9], STRICT) is not None


def test_baseline_is_the_median_of_the_last_window_values() -> None:
    history = [0.1, 0.1, 0.1, 0.9, 0.8, 0.95, 0.85, 0.9]  # the first three are out of the window
    drift = check_drift("acc", 0.5, history, STRICT)
    assert drift is not None
    assert drift.history == (0.9, 0.8, 0.95, 0.85, 0.9)
    assert drift.baseline == 0.9
    assert drift.worse_by == pytest.approx(0.4)
    # the same value against the old, low values is an improvement
    assert check_drift("acc", 0.5, history[:4], STRICT) is None


def test_direction() -> None:
    history = [1.0, 1.0, 1.0]
    assert check_drift("loss", 1.5, history, STRICT, higher_is_better=False) is not None
    assert check_drift("loss", 0.5, history, STRICT, higher_is_better=False) is None
    assert check_drift("acc", 1.5, history, STRICT) is None
    drift = check_drift("acc", 0.5, history, STRICT)
    assert drift is not None and drift.worse_by == 0.5


@pytest.mark.parametrize(
    ("policy", "tolerance"),
    [
        (MetricPolicy(rel_tolerance=0.1, abs_tolerance=0.0, mad_k=0.0), 0.1 * 10.0),
        (MetricPolicy(rel_tolerance=0.01, abs_tolerance=2.0, mad_k=0.0), 2.0),
        # history 9, 10, 11, 10, 10: MAD = median(1, 0, 1, 0, 0) = 0
        (MetricPolicy(rel_tolerance=0.0, abs_tolerance=0.0, mad_k=3.0), 0.0),
    ],
)
def test_tolerance_is_the_largest_allowance(policy: MetricPolicy, tolerance: float) -> None:
    history = [9.0, 10.0, 11.0, 10.0, 10.0]
    drift = check_drift("score", -100.0, history, policy)
    assert drift is not None
    assert drift.tolerance == pytest.approx(tolerance)
    assert check_drift("score", 10.0 - tolerance, history, policy) is None  # exactly allowed


def test_noisy_history_widens_the_tolerance() -> None:
    noisy = [10.0, 14.0, 6.0, 12.0, 8.0]  # MAD = 2
    policy = MetricPolicy(rel_tolerance=0.0, mad_k=3.0)
    assert mad(noisy) == 2.0
    assert check_drift("score", 4.5, noisy, policy) is None
    drift = check_drift("score", 3.5, noisy, policy)
    assert drift is not None and drift.tolerance == 6.0


def test_nan_value_drifts_once_there_is_a_baseline() -> None:
    drift = check_drift("loss", math.nan, [1.0, 1.0, 1.0], STRICT, higher_is_better=False)
    assert drift is not None
    assert "loss = nan" in drift.message()
    assert check_drift("loss", math.nan, [1.0], STRICT) is None


def test_drift_message() -> None:
    policy = MetricPolicy(window=10, rel_tolerance=0.05, abs_tolerance=0.001, mad_k=3.0)
    history = [0.91, 0.9, 0.92, 0.9, 0.9, 0.89, 0.9]
    drift = check_drift("accuracy", 0.812345, history, policy)
    assert drift is not None
    first, second = drift.message().splitlines()
    assert first.startswith("accuracy = 0.8123 is worse than its baseline 0.9 ")
    assert "(median of the last 7 passing runs)" in first
    assert "by 0.08766 (9.7%)" in first
    # max(0.05 x 0.9, 0.001, 3 x 0) = 0.045
    assert "tolerance 0.045 = max(0.05 x |baseline| = 0.045, abs 0.001, 3 x MAD 0 = 0)" in first
    assert second == "  higher is better; last values: 0.92, 0.9, 0.9, 0.89, 0.9"


def test_median_and_mad() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert mad([1.0, 1.0, 2.0, 2.0, 4.0, 6.0, 9.0]) == 1.0
    assert mad([5.0, 5.0]) == 0.0


# -- sparkline --------------------------------------------------------------------------


def test_sparkline() -> None:
    assert sparkline([]) == ""
    assert sparkline([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) == "▁▂▃▄▅▆▇█"
    assert sparkline([0.0, 1.0]) == "▁█"
    assert sparkline([2.0, 2.0, 2.0]) == "▄▄▄"
    assert sparkline([0.0, math.nan, 1.0]) == "▁ █"
    assert sparkline([math.nan, math.nan]) == "  "
    assert sparkline([-1e308, 1e308]) == "▁█"  # the range itself overflows


# -- properties -------------------------------------------------------------------------

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
histories = st.lists(values, min_size=0, max_size=30)
policies = st.builds(
    MetricPolicy,
    window=st.integers(1, 15),
    min_history=st.just(1),
    rel_tolerance=st.floats(0, 1),
    abs_tolerance=st.floats(0, 10),
    mad_k=st.floats(0, 5),
)


@given(history=histories, policy=policies, higher=st.booleans())
def test_the_baseline_itself_never_drifts(
    history: list[float], policy: MetricPolicy, higher: bool
) -> None:
    recent = history[-policy.window :]
    if recent:
        assert check_drift("m", median(recent), history, policy, higher_is_better=higher) is None


@given(history=histories, policy=policies, higher=st.booleans(), gain=st.floats(0, 1e6))
def test_a_better_value_never_drifts(
    history: list[float], policy: MetricPolicy, higher: bool, gain: float
) -> None:
    recent = history[-policy.window :]
    if recent:
        base = median(recent)
        value = base + gain if higher else base - gain
        assert check_drift("m", value, history, policy, higher_is_better=higher) is None


@given(history=histories, policy=policies, higher=st.booleans(), value=values)
def test_drift_iff_worse_by_more_than_the_tolerance(
    history: list[float], policy: MetricPolicy, higher: bool, value: float
) -> None:
    drift = check_drift("m", value, history, policy, higher_is_better=higher)
    recent = history[-policy.window :]
    if len(recent) < policy.min_history:
        assert drift is None
        return
    # Recompute the verdict independently of check_drift's own result.
    base = median(recent)
    tolerance = max(
        policy.rel_tolerance * abs(base), policy.abs_tolerance, policy.mad_k * mad(recent)
    )
    probe = Drift("m", value, base, tolerance, higher, tuple(recent), policy)
    assert (drift is not None) == (probe.worse_by > tolerance)
    if drift is not None:
        assert drift == probe
        assert drift.worse_by > drift.tolerance >= 0
        assert len(drift.message().splitlines()) == 2


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=50))
def test_sparkline_has_one_block_per_value(series: list[float]) -> None:
    line = sparkline(series)
    assert len(line) == len(series)
    assert set(line) <= set("▁▂▃▄▅▆▇█ ")
    finite = [v for v in series if math.isfinite(v)]
    if finite and min(finite) < max(finite):
        assert "▁" in line and "█" in line
