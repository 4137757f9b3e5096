"""performance: metrics with bootstrap CIs, and the champion gate."""

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from handoff_agent.checks import _metrics
from handoff_agent.checks.api import CheckContext
from handoff_agent.checks.performance import PerformanceCheck


def _classification(n=600, seed=0):
    X, y = make_classification(n, n_features=6, n_informative=4, random_state=seed)
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(6)]), pd.Series(y)


def _run(model, X, y, champion=None, **kwargs):
    return PerformanceCheck().run(CheckContext(model, {}, X=X, y=y, champion=champion), **kwargs)


def test_good_model_passes_with_confidence_intervals():
    X, y = _classification()
    model = LogisticRegression().fit(X, y)

    res = _run(model, X, y)

    assert res.status == "pass"
    assert res.metrics["primary_metric"] == "roc_auc"
    for metric in ("accuracy", "f1", "roc_auc", "log_loss"):
        lo, hi = res.metrics[f"{metric}_ci"]
        assert lo <= res.metrics[metric] <= hi
    assert "roc_curve" in res.plots


def test_fails_against_a_clearly_better_champion_naming_metric_and_delta():
    # Given a champion, and a candidate trained on shuffled labels
    X, y = _classification()
    champion = LogisticRegression().fit(X, y)
    shuffled = np.random.default_rng(0).permutation(y.to_numpy())
    candidate = LogisticRegression().fit(X, shuffled)

    # When the candidate is checked against the champion
    res = _run(candidate, X, y, champion=champion)

    # Then it fails, and the message names the metric and the delta
    assert res.status == "fail"
    assert "roc_auc" in res.message
    delta = res.metrics["delta_roc_auc"]
    assert delta < -0.1
    assert f"{delta:+.3f}" in res.message
    assert re.search(r"delta -0\.\d{3}", res.message)


def test_better_candidate_passes_against_a_weaker_champion():
    X, y = _classification()
    champion = DummyClassifier(strategy="prior").fit(X, y)
    res = _run(LogisticRegression().fit(X, y), X, y, champion=champion)
    assert res.status == "pass"
    assert res.metrics["delta_roc_auc"] > 0.2
    assert "rose" in res.message


def test_small_regression_within_threshold_is_not_a_failure():
    X, y = _classification()
    model = LogisticRegression().fit(X, y)
    res = _run(model, X, y, champion=model, max_regression=0.01)
    assert res.status == "pass"
    assert res.metrics["delta_roc_auc"] == 0


def test_regression_task_and_worse_candidate_fails_on_r2():
    X, y = make_regression(500, n_features=5, noise=5, random_state=0)
    X, y = pd.DataFrame(X, columns=list("abcde")), pd.Series(y)
    champion = LinearRegression().fit(X, y)
    candidate = LinearRegression().fit(X[["a"]].assign(b=0, c=0, d=0, e=0)[list("abcde")], y)

    res = _run(candidate, X, y, champion=champion)

    assert res.status == "fail"
    assert "r2" in res.message
    assert res.metrics["task"] == "regression"
    assert {"r2", "mae", "rmse"} <= set(res.metrics)
    assert "predicted_vs_actual" in res.plots


def test_min_score_fails_without_a_champion():
    X, y = _classification()
    res = _run(DummyClassifier().fit(X, y), X, y, min_score=0.7)
    assert res.status == "fail"
    assert "short of 0.7" in res.message


def test_string_labels_and_multiclass():
    X, y = make_classification(600, n_features=6, n_informative=4, n_classes=3, random_state=1)
    X = pd.DataFrame(X)
    X.columns = [str(c) for c in X.columns]
    y = pd.Series(np.array(["low", "mid", "high"])[y])
    res = _run(LogisticRegression().fit(X, y), X, y)
    assert res.status == "pass"
    assert 0.5 < res.metrics["roc_auc"] <= 1


def test_a_model_whose_predict_raises_fails():
    X, y = _classification(100)

    class Broken:
        _estimator_type = "classifier"

        def predict(self, X):
            raise ValueError("boom")

    res = _run(Broken(), X, y)
    assert res.status == "fail"
    assert "ValueError: boom" in res.message


@pytest.mark.parametrize("classes", [2, 3])
def test_vectorised_metrics_agree_with_sklearn(classes):
    X, y = make_classification(
        400, n_features=6, n_informative=4, n_classes=classes, random_state=0
    )
    m = LogisticRegression().fit(X, y)
    out = (m.predict(X), m.predict_proba(X), m.classes_)
    ones = np.ones((1, len(y)))
    boot = _metrics.classification(ones, y, *out)
    point = _metrics.point_estimates("classification", y, *out)
    assert boot.keys() == point.keys()
    for k, v in point.items():
        assert boot[k][0] == pytest.approx(v, abs=1e-9), k


def test_vectorised_regression_metrics_agree_with_sklearn():
    X, y = make_regression(300, n_features=4, noise=10, random_state=0)
    pred = LinearRegression().fit(X, y).predict(X)
    boot = _metrics.regression(np.ones((1, len(y))), y, pred)
    for k, v in _metrics.point_estimates("regression", y, pred, None, None).items():
        assert boot[k][0] == pytest.approx(v, rel=1e-9), k


def _accuracy(model, X, y) -> float:
    return float(np.mean(model.predict(X) == np.asarray(y)))


@pytest.mark.parametrize("piped", [False, True], ids=["forest", "pipeline"])
def test_a_forest_is_scored_on_its_own_predictions_taken_from_its_probabilities(piped):
    # A forest's predict is the argmax of its predict_proba: the check computes it once
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _classification()
    y = y.map({0: "stay", 1: "churn"})
    forest = RandomForestClassifier(n_estimators=20, random_state=0)
    model = (make_pipeline(StandardScaler(), forest) if piped else forest).fit(X[:400], y[:400])
    expected = _accuracy(model, X[400:], y[400:])
    calls = []
    model.predict = lambda *a: calls.append(a)  # the instance's: not called

    res = _run(model, X[400:], y[400:])

    assert calls == []
    assert res.metrics["accuracy"] == pytest.approx(expected)


def test_a_forest_subclass_that_predicts_otherwise_is_scored_on_its_predict():
    from sklearn.ensemble import RandomForestClassifier

    class Contrarian(RandomForestClassifier):
        def predict(self, X):
            return self.classes_.take(np.argmin(self.predict_proba(X), axis=1))

    X, y = _classification()
    model = Contrarian(n_estimators=20, random_state=0).fit(X[:400], y[:400])

    res = _run(model, X[400:], y[400:])

    assert res.metrics["accuracy"] == pytest.approx(_accuracy(model, X[400:], y[400:]))
    assert res.metrics["accuracy"] < 0.3


def test_rows_with_tied_probabilities_ask_the_models_own_predict():
    # A stump whose leaves split 50/50: those rows' probabilities tie, and a tree's predict
    # is only known to follow argmax where one class is strictly the highest
    from sklearn.tree import DecisionTreeClassifier

    X = pd.DataFrame({"a": [0.0, 0.0, 1.0, 1.0, 1.0, 1.0] * 20})
    y = pd.Series([0, 1, 1, 1, 1, 0] * 20)
    model = DecisionTreeClassifier(max_depth=1).fit(X, y)
    expected = _accuracy(model, X, y)
    asked = []
    predict = model.predict
    model.predict = lambda rows: asked.append(len(rows)) or predict(rows)

    res = _run(model, X, y)

    assert asked == [40]  # the rows where a == 0, and no others
    assert res.metrics["accuracy"] == pytest.approx(expected)


def test_a_champion_of_another_task_is_not_compared_with():
    """A regressor pushed under a classifier's name: an r2 beside an accuracy means nothing,
    so the check says why it did not compare, and warns, instead of 'r2 rose to 1.000'."""
    X, y = _classification()
    classifier = LogisticRegression().fit(X, y)
    target = X["f0"] * 3 + X["f1"]
    regressor = LinearRegression().fit(X, target)

    res = _run(regressor, X, target, champion=classifier)

    assert res.status == "warn"
    assert res.message.startswith("r2 = 1.000 (95% CI")
    unlike = "not compared with the champion: the champion is a classification model, this one"
    assert f"{unlike} regression" in res.message
    assert "push it under its own name" in res.message
    assert not any(k.startswith(("champion_", "delta_")) for k in res.metrics)


def test_a_handful_of_rows_is_too_few_to_judge():
    X, y = _classification()
    model = LogisticRegression().fit(X, y)
    few = _run(model, X.iloc[:5], y.iloc[:5].reset_index(drop=True))
    assert few.status == "warn"
    assert "Only 5 rows: too few to judge a model by (min_rows 20)" in few.message
    one = _run(model, X.iloc[:1], y.iloc[:1].reset_index(drop=True))
    assert "Only 1 row: too few" in one.message, one.message
    assert _run(model, X.iloc[:20], y.iloc[:20]).status == "pass"
