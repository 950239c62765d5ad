"""Generated customer data for a churn model, as an upstream feature pipeline would deliver it.

Everything is drawn from a seeded numpy Generator, so a (size, seed) pair always yields the
same frame. ``spend_shift`` moves the spend distribution to simulate drift.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PLANS = ("basic", "plus", "pro")
COUNTRIES = ("DE", "FR", "GB", "NL", "US")
PLAN_PRICE = {"basic": 9.0, "plus": 19.0, "pro": 49.0}
EVENT_TYPES = ("login", "view", "search", "purchase")

#: The frame's contract: column -> dtype kind ("i" int, "f" float, "b" bool, "M" datetime,
#: "category").
SCHEMA = {
    "customer_id": "i",
    "signup_date": "M",
    "country": "category",
    "plan": "category",
    "age": "i",
    "tenure_months": "i",
    "monthly_spend": "f",
    "sessions_30d": "i",
    "support_tickets_90d": "i",
    "churned": "b",
}
SNAPSHOT_DATE = pd.Timestamp("2024-06-30")


def make_customers(n: int, seed: int, spend_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plan = rng.choice(PLANS, size=n, p=[0.6, 0.3, 0.1])
    country = rng.choice(COUNTRIES, size=n, p=[0.3, 0.2, 0.2, 0.1, 0.2])
    age = np.clip(rng.normal(41, 12, size=n).round(), 18, 90).astype(np.int64)
    tenure = rng.integers(1, 61, size=n)
    price = pd.Series(plan).map(PLAN_PRICE).to_numpy()
    spend = price * rng.lognormal(0.0, 0.25, size=n) * (1 + spend_shift)
    sessions = rng.poisson(np.where(plan == "basic", 8, 14), size=n)
    tickets = rng.poisson(0.6, size=n)

    logit = (
        1.0
        - 0.07 * tenure
        + 1.1 * tickets
        - 0.15 * sessions
        - 0.8 * (plan == "pro")
        + 0.04 * (age - 41)
        + 0.8 * (country == "US")
        + 1.5 * ((plan == "basic") & (sessions < 5))  # disengaged on the cheapest plan
    )
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))

    # The billing export misses about 1 % of spends; the model has to cope.
    spend[rng.random(n) < 0.01] = np.nan
    signup = SNAPSHOT_DATE - pd.to_timedelta(tenure * 30 + rng.integers(0, 30, size=n), unit="D")

    return pd.DataFrame(
        {
            "customer_id": np.arange(seed * 1_000_000, seed * 1_000_000 + n, dtype=np.int64),
            "signup_date": signup,
            "country": pd.Categorical(country, categories=COUNTRIES),
            "plan": pd.Categorical(plan, categories=PLANS),
            "age": age,
            "tenure_months": tenure.astype(np.int64),
            "monthly_spend": spend.round(2),
            "sessions_30d": sessions.astype(np.int64),
            "support_tickets_90d": tickets.astype(np.int64),
            "churned": churned,
        }
    )


def make_events(customers: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The raw event log behind ``sessions_30d``: one login per session plus page events."""
    rng = np.random.default_rng(seed)
    sessions = customers["sessions_30d"].to_numpy()
    session_owner = np.repeat(customers["customer_id"].to_numpy(), sessions)
    start = SNAPSHOT_DATE - pd.Timedelta(days=30)
    session_start = start + pd.to_timedelta(
        rng.integers(0, 30 * 24 * 3600, size=len(session_owner)), unit="s"
    )
    events_per_session = 1 + rng.poisson(6, size=len(session_owner))
    owner = np.repeat(session_owner, events_per_session)
    session_id = np.repeat(np.arange(len(session_owner)), events_per_session)
    session_first_row = np.cumsum(events_per_session) - events_per_session
    offset = np.arange(len(owner)) - np.repeat(session_first_row, events_per_session)
    page = rng.choice(EVENT_TYPES[1:], size=len(owner), p=[0.7, 0.25, 0.05])
    kind = np.where(offset == 0, "login", page)
    timestamp = np.repeat(session_start, events_per_session) + pd.to_timedelta(
        offset * 20, unit="s"
    )
    return pd.DataFrame(
        {
            "customer_id": owner,
            "session_id": session_id,
            "timestamp": timestamp,
            "event": pd.Categorical(kind, categories=EVENT_TYPES),
        }
    )
