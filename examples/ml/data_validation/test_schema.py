"""The customer snapshot honours its contract: columns, dtypes, categories, keys."""

import pandas as pd
import pytest

from examples.ml.datasets import COUNTRIES, PLANS, SCHEMA


def dtype_kind(series):
    if isinstance(series.dtype, pd.CategoricalDtype):
        return "category"
    return series.dtype.kind


def test_columns_match_the_contract(current_customers):
    assert list(current_customers.columns) == list(SCHEMA)


def test_dtypes_match_the_contract(current_customers):
    actual = {column: dtype_kind(current_customers[column]) for column in SCHEMA}
    mismatched = {c: (actual[c], kind) for c, kind in SCHEMA.items() if actual[c] != kind}
    assert mismatched == {}, "column: (actual, expected)"


@pytest.mark.parametrize("column,allowed", [("country", COUNTRIES), ("plan", PLANS)])
def test_categories_are_known(current_customers, column, allowed):
    values = set(current_customers[column].dropna().unique())
    assert values <= set(allowed), f"unexpected {column}: {values - set(allowed)}"


def test_customer_id_is_a_key(current_customers):
    ids = current_customers["customer_id"]
    assert ids.notna().all()
    assert ids.is_unique


def test_no_duplicate_records(current_customers):
    # The same customer exported twice under two ids is still a duplicate.
    duplicated = current_customers.drop(columns="customer_id").duplicated()
    assert duplicated.sum() == 0, current_customers[duplicated].head()


def test_duplicate_check_catches_a_replayed_batch(current_customers):
    """Negative control: the checks above must fail on a batch that was loaded twice."""
    replayed = pd.concat([current_customers, current_customers.sample(50, random_state=0)])
    assert not replayed["customer_id"].is_unique
    assert replayed.drop(columns="customer_id").duplicated().sum() == 50
