"""The train/test split every model test uses."""

from dataclasses import dataclass

import pandas as pd
import pytest

from examples.ml.churn_model import split


@dataclass(frozen=True)
class Split:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


@pytest.fixture(scope="session")
def churn_split(reference_customers):
    return Split(*split(reference_customers, seed=0))
