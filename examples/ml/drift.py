"""Drift checks between a reference sample (what the model was trained on) and a current one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp


@dataclass(frozen=True)
class Drift:
    statistic: float
    p_value: float
    drifted: bool


def ks_drift(
    reference: pd.Series, current: pd.Series, alpha: float = 0.001, min_effect: float = 0.03
) -> Drift:
    """Two-sample Kolmogorov-Smirnov test on the non-null values.

    Drift needs both a significant p-value and a KS distance of at least ``min_effect``: with
    tens of thousands of rows, differences far too small to matter are already significant.
    """
    result = ks_2samp(reference.dropna().to_numpy(), current.dropna().to_numpy())
    statistic, p_value = float(result.statistic), float(result.pvalue)
    return Drift(statistic, p_value, p_value < alpha and statistic >= min_effect)


def population_stability_index(reference: pd.Series, current: pd.Series) -> float:
    """PSI of a categorical column; below 0.1 is usually read as stable, above 0.25 as drift."""
    categories = sorted(set(reference.dropna().unique()) | set(current.dropna().unique()))
    expected = reference.value_counts(normalize=True).reindex(categories, fill_value=0).to_numpy()
    actual = current.value_counts(normalize=True).reindex(categories, fill_value=0).to_numpy()
    expected = np.clip(expected, 1e-6, None)
    actual = np.clip(actual, 1e-6, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))
