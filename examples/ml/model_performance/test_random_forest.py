"""A random forest trained on two cores, as it is in the nightly training job."""

import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score

from examples.ml.churn_model import churn_pipeline


@pytest.mark.resources(cpus=2)
@pytest.mark.timeout(120)
def test_random_forest_quality(churn_split, record_metric):
    forest = churn_pipeline(
        RandomForestClassifier(
            n_estimators=100,
            min_samples_leaf=5,
            max_features="sqrt",
            oob_score=True,
            n_jobs=2,
            random_state=0,
        )
    )
    forest.fit(churn_split.X_train, churn_split.y_train)
    forest.set_params(model__n_jobs=1)  # served one request at a time
    scores = forest.predict_proba(churn_split.X_test)[:, 1]
    record_metric("roc_auc", roc_auc_score(churn_split.y_test, scores), min=0.82)
    record_metric("oob_accuracy", forest.named_steps["model"].oob_score_, min=0.80)
