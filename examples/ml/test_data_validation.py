"""Data-validation tests: schema, ranges, nulls and drift on a generated data set."""

import math
import random

import pytest

pytestmark = pytest.mark.data_validation


def make_rows(n, seed, shift=0.0):
    rng = random.Random(seed)
    return [
        {
            "age": rng.randint(18, 90),
            "income": max(0.0, rng.gauss(50_000 + shift * 10_000, 15_000)),
            "score": rng.random(),
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def reference():
    return make_rows(60_000, seed=1)


@pytest.fixture(scope="module")
def current():
    return make_rows(60_000, seed=2)


def ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    while i < len(a) and j < len(b):
        value = min(a[i], b[j])
        while i < len(a) and a[i] == value:
            i += 1
        while j < len(b) and b[j] == value:
            j += 1
        d = max(d, abs(i / len(a) - j / len(b)))
    return d


def ks_critical(n, m, alpha=0.001):
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def test_schema(current):
    assert all(set(row) == {"age", "income", "score"} for row in current)


def test_no_nulls(current):
    assert all(v is not None for row in current for v in row.values())


@pytest.mark.parametrize("column,low,high", [("age", 18, 90), ("score", 0, 1)])
def test_ranges(current, column, low, high):
    assert all(low <= row[column] <= high for row in current)


@pytest.mark.parametrize("column", ["age", "income", "score"])
def test_no_drift(reference, current, column):
    d = ks_statistic([r[column] for r in reference], [r[column] for r in current])
    assert d < ks_critical(len(reference), len(current))


def test_drift_is_detected(reference):
    shifted = make_rows(60_000, seed=3, shift=1.0)
    d = ks_statistic([r["income"] for r in reference], [r["income"] for r in shifted])
    assert d > ks_critical(len(reference), len(shifted))
