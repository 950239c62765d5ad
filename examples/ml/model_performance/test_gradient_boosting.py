"""A gradient-boosted challenger: it must be at least as good as the linear model."""

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from examples.ml.churn_model import churn_pipeline, latency_ms


def gradient_boosting(n_estimators=100):
    return churn_pipeline(
        GradientBoostingClassifier(
            n_estimators=n_estimators,
            max_depth=3,
            learning_rate=0.1,
            subsample=0.8,
            random_state=0,
        )
    )


@pytest.fixture(scope="module")
def model(churn_split):
    return gradient_boosting().fit(churn_split.X_train, churn_split.y_train)


@pytest.fixture(scope="module")
def scores(model, churn_split):
    return model.predict_proba(churn_split.X_test)[:, 1]


def test_roc_auc(scores, churn_split, record_metric):
    record_metric("roc_auc", roc_auc_score(churn_split.y_test, scores), min=0.82)


def test_at_least_as_good_as_the_linear_model(scores, churn_split):
    linear = churn_pipeline(LogisticRegression(max_iter=1000))
    linear.fit(churn_split.X_train, churn_split.y_train)
    linear_auc = roc_auc_score(churn_split.y_test, linear.predict_proba(churn_split.X_test)[:, 1])
    assert roc_auc_score(churn_split.y_test, scores) >= linear_auc - 0.01


def test_relies_on_the_expected_features(model):
    names = model.named_steps["prep"].get_feature_names_out()
    importances = model.named_steps["model"].feature_importances_
    top = {name.split("__")[1] for name in names[np.argsort(importances)[::-1][:3]]}
    assert {"support_tickets_90d", "tenure_months"} <= top


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


def test_training_is_reproducible(churn_split):
    rows = churn_split.X_train.head(5_000), churn_split.y_train.head(5_000)
    first = gradient_boosting(50).fit(*rows).predict_proba(churn_split.X_test)
    second = gradient_boosting(50).fit(*rows).predict_proba(churn_split.X_test)
    np.testing.assert_array_equal(first, second)
