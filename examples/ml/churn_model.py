"""The churn model: preprocessing and estimators as scikit-learn pipelines."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

NUMERIC = ["age", "tenure_months", "monthly_spend", "sessions_30d", "support_tickets_90d"]
CATEGORICAL = ["country", "plan"]
FEATURES = NUMERIC + CATEGORICAL
TARGET = "churned"


def preprocessing() -> ColumnTransformer:
    return ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC),
            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
        ]
    )


def churn_pipeline(estimator: Any) -> Pipeline:
    return Pipeline([("prep", preprocessing()), ("model", estimator)])


def split(frame: pd.DataFrame, seed: int = 0, test_size: float = 0.25) -> list[Any]:
    """Stratified train/test split: [X_train, X_test, y_train, y_test]."""
    return train_test_split(
        frame[FEATURES],
        frame[TARGET],
        test_size=test_size,
        stratify=frame[TARGET],
        random_state=seed,
    )


def latency_ms(predict: Callable[[pd.DataFrame], Any], rows: pd.DataFrame) -> np.ndarray:
    """Wall time of ``predict`` on one row at a time (as a service calls it), in milliseconds.

    The first call is a warm-up and is not counted.
    """
    predict(rows.iloc[:1])
    timings = []
    for i in range(len(rows)):
        row = rows.iloc[i : i + 1]
        start = time.perf_counter()
        predict(row)
        timings.append((time.perf_counter() - start) * 1000)
    return np.asarray(timings)
