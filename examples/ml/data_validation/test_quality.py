"""Value ranges, null rates and consistency of the customer snapshot and its event log."""

import pandas as pd
import pytest

from examples.ml.datasets import SNAPSHOT_DATE, make_events


@pytest.mark.parametrize(
    "column,low,high",
    [
        ("age", 18, 90),
        ("tenure_months", 1, 60),
        ("monthly_spend", 0.0, 500.0),
        ("sessions_30d", 0, 120),
        ("support_tickets_90d", 0, 20),
    ],
)
def test_values_in_range(current_customers, column, low, high):
    values = current_customers[column].dropna()
    outside = values[(values < low) | (values > high)]
    assert outside.empty, f"{len(outside)} values of {column} outside [{low}, {high}]"


def test_mandatory_columns_have_no_nulls(current_customers):
    null_counts = current_customers.drop(columns="monthly_spend").isna().sum()
    assert null_counts[null_counts > 0].to_dict() == {}


def test_spend_null_rate_is_within_tolerance(current_customers):
    rate = current_customers["monthly_spend"].isna().mean()
    assert rate <= 0.02, f"{rate:.2%} of spends missing"


def test_signup_date_agrees_with_tenure(current_customers):
    months = (SNAPSHOT_DATE - current_customers["signup_date"]).dt.days / 30
    gap = months - current_customers["tenure_months"]
    assert gap.between(0, 1).all()


def test_churn_rate_is_plausible(current_customers):
    assert 0.10 <= current_customers["churned"].mean() <= 0.40


@pytest.fixture(scope="module")
def events(current_customers):
    return make_events(current_customers, seed=11)


def test_every_event_belongs_to_a_known_customer(events, current_customers):
    orphans = ~events["customer_id"].isin(current_customers["customer_id"])
    assert orphans.sum() == 0


def test_events_reconcile_with_the_feature_table(events, current_customers):
    """The sessions_30d feature must equal what the raw event log says."""
    sessions = (
        events[events["event"] == "login"]
        .groupby("customer_id")
        .size()
        .reindex(current_customers["customer_id"], fill_value=0)
    )
    expected = current_customers.set_index("customer_id")["sessions_30d"]
    mismatched = (sessions != expected).sum()
    assert mismatched == 0, f"{mismatched} customers disagree"


def test_sessions_are_well_formed(events):
    window_start = SNAPSHOT_DATE - pd.Timedelta(days=30)
    assert events["timestamp"].between(window_start, SNAPSHOT_DATE + pd.Timedelta(hours=1)).all()
    ordered = events.sort_values(["session_id", "timestamp"], kind="stable")
    first = ordered.groupby("session_id", sort=False)["event"].first()
    assert (first == "login").all()
    assert ordered.groupby("session_id")["customer_id"].nunique().max() == 1
