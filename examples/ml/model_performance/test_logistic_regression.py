"""The production candidate: a regularised logistic regression on the churn features."""

import os
import pickle
import time

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score

from examples.ml.churn_model import FEATURES, TARGET, churn_pipeline, latency_ms


def logistic_regression():
    return churn_pipeline(LogisticRegression(C=1.0, max_iter=1000))


@pytest.fixture(scope="module")
def model(churn_split):
    return logistic_regression().fit(churn_split.X_train, churn_split.y_train)


@pytest.fixture(scope="module")
def scores(model, churn_split):
    return model.predict_proba(churn_split.X_test)[:, 1]


def test_accuracy(scores, churn_split, record_metric):
    record_metric("accuracy", accuracy_score(churn_split.y_test, scores >= 0.5), min=0.80)


def test_roc_auc(scores, churn_split, record_metric):
    record_metric("roc_auc", roc_auc_score(churn_split.y_test, scores), min=0.82)


def test_log_loss(scores, churn_split, record_metric):
    record_metric(
        "log_loss", log_loss(churn_split.y_test, scores), higher_is_better=False, max=0.45
    )


def test_beats_the_majority_baseline(scores, churn_split):
    baseline = DummyClassifier(strategy="most_frequent").fit(
        churn_split.X_train, churn_split.y_train
    )
    baseline_accuracy = baseline.score(churn_split.X_test, churn_split.y_test)
    assert accuracy_score(churn_split.y_test, scores >= 0.5) >= baseline_accuracy + 0.03


@pytest.mark.parametrize("plan", ["basic", "plus", "pro"])
def test_roc_auc_per_plan(scores, churn_split, plan, record_metric):
    """No customer segment may be served much worse than the average."""
    segment = (churn_split.X_test["plan"] == plan).to_numpy()
    auc = roc_auc_score(churn_split.y_test[segment], scores[segment])
    record_metric(f"roc_auc_{plan}", auc, min=0.75)


def test_probabilities_are_calibrated(scores, churn_split, record_metric):
    observed, predicted = calibration_curve(
        churn_split.y_test, scores, n_bins=10, strategy="quantile"
    )
    record_metric(
        "max_calibration_gap",
        float(np.max(np.abs(observed - predicted))),
        higher_is_better=False,
        max=0.08,
    )


def test_more_support_tickets_raise_the_churn_risk(model, churn_split):
    customers = churn_split.X_test.sample(200, random_state=1)
    more_tickets = customers.assign(support_tickets_90d=customers["support_tickets_90d"] + 2)
    before = model.predict_proba(customers)[:, 1]
    after = model.predict_proba(more_tickets)[:, 1]
    assert (after > before).all()


def test_column_order_does_not_matter(model, churn_split):
    rows = churn_split.X_test.head(500)
    shuffled = rows[list(reversed(FEATURES))]
    np.testing.assert_array_equal(model.predict_proba(rows), model.predict_proba(shuffled))


def test_holds_up_on_this_weeks_customers(
    model, scores, churn_split, current_customers, record_metric
):
    holdout_auc = roc_auc_score(churn_split.y_test, scores)
    current_auc = roc_auc_score(
        current_customers[TARGET], model.predict_proba(current_customers[FEATURES])[:, 1]
    )
    record_metric("roc_auc_current", current_auc, min=holdout_auc - 0.03)


def test_cross_validated_auc_is_stable(reference_customers, record_metric):
    """The AUC of each of five folds, recorded together: the gate of 2% fails a run only when
    the folds' median is lower than the baseline's (the runs of ``--metrics-baseline``,
    e.g. main) beyond the gate with 95% confidence, not when one fold is unlucky.

    ``EXAMPLES_LABEL_NOISE`` (a share, 0 by default) flips that share of the labels before
    training, to see the gate catch a worse model.
    """
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    labels = reference_customers[TARGET]
    noise = float(os.environ.get("EXAMPLES_LABEL_NOISE", "0"))
    if noise:
        flipped = np.random.default_rng(0).random(len(labels)) < noise
        as_int = labels.astype(int)
        labels = as_int.where(~flipped, 1 - as_int).astype(labels.dtype)
    aucs = cross_val_score(
        logistic_regression(),
        reference_customers[FEATURES],
        labels,
        cv=folds,
        scoring="roc_auc",
        n_jobs=1,
    )
    record_metric("cv_roc_auc", [float(a) for a in aucs], min=0.80, gate="-2%")
    record_metric("cv_roc_auc_std", float(aucs.std()), higher_is_better=False, max=0.03)


def test_p95_latency_of_one_prediction(model, churn_split, record_metric):
    timings = latency_ms(model.predict_proba, churn_split.X_test.head(100))
    # Wall-clock latency measures the machine as much as the model, so there is no fixed
    # ceiling (a busy CI runner would cross it): the value is reported, and compared only
    # with the earlier runs in the same duration store, allowing 100 ms over their median.
    record_metric(
        "p95_latency_ms",
        float(np.percentile(timings, 95)),
        higher_is_better=False,
        abs_tolerance=100.0,
    )


def test_batch_scoring_throughput(model, churn_split, record_metric):
    """The nightly job scores every customer in one batch: per row, that must stay far
    cheaper than serving one request at a time.

    Both are timed here, in turns, so a busy machine slows both alike and the ratio holds
    where a fixed rows-a-second floor would fail. The rows a second are recorded for the
    trend, not checked: they measure the machine as much as the model.
    """
    batch, requests = churn_split.X_test, churn_split.X_test.head(20)
    batch_seconds = request_seconds = 0.0
    for _ in range(5):
        start = time.perf_counter()
        model.predict_proba(batch)
        batch_seconds += time.perf_counter() - start
        request_seconds += float(latency_ms(model.predict_proba, requests).sum()) / 1000
    per_row_in_batch = batch_seconds / (5 * len(batch))
    per_request = request_seconds / (5 * len(requests))
    record_metric("batch_rows_per_second", 1 / per_row_in_batch, drift=False)
    record_metric("batch_speedup_per_row", per_request / per_row_in_batch, min=100.0, drift=False)


def test_survives_a_pickle_round_trip(model, churn_split, tmp_path):
    path = tmp_path / "churn-model.pkl"
    path.write_bytes(pickle.dumps(model))
    loaded = pickle.loads(path.read_bytes())
    rows = churn_split.X_test.head(1_000)
    np.testing.assert_array_equal(loaded.predict_proba(rows), model.predict_proba(rows))
