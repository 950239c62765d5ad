"""Drift between the training snapshot and this week's snapshot."""

import pytest

from examples.ml.datasets import make_customers
from examples.ml.drift import ks_drift, population_stability_index


@pytest.mark.parametrize(
    "column", ["age", "tenure_months", "monthly_spend", "sessions_30d", "support_tickets_90d"]
)
def test_numeric_feature_has_not_drifted(reference_customers, current_customers, column):
    drift = ks_drift(reference_customers[column], current_customers[column])
    assert not drift.drifted, f"{column}: KS={drift.statistic:.3f}, p={drift.p_value:.2g}"


@pytest.mark.parametrize("column", ["country", "plan"])
def test_categorical_feature_has_not_drifted(reference_customers, current_customers, column):
    psi = population_stability_index(reference_customers[column], current_customers[column])
    assert psi < 0.1, f"{column}: PSI={psi:.3f}"


def test_label_rate_has_not_moved(reference_customers, current_customers):
    shift = abs(current_customers["churned"].mean() - reference_customers["churned"].mean())
    assert shift < 0.02


def test_a_price_increase_is_detected_as_drift(reference_customers):
    """The check must have teeth: 8 % higher spends in a full snapshot are flagged."""
    repriced = make_customers(len(reference_customers), seed=3, spend_shift=0.08)
    drift = ks_drift(reference_customers["monthly_spend"], repriced["monthly_spend"])
    assert drift.drifted, f"KS={drift.statistic:.3f}, p={drift.p_value:.2g}"
