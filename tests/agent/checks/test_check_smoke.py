"""smoke: shape, dtype, finiteness, probabilities and determinism of predictions."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression

from handoff_agent.checks.api import CheckContext
from handoff_agent.checks.smoke import SmokeCheck

X_CLF, Y_CLF = make_classification(300, n_features=4, random_state=0)
X_CLF = pd.DataFrame(X_CLF, columns=list("abcd"))
X_REG, Y_REG = make_regression(300, n_features=4, random_state=0)
X_REG = pd.DataFrame(X_REG, columns=list("abcd"))


class Regressor:
    """A regressor whose predict is ``fn(X)``."""

    _estimator_type = "regressor"

    def __init__(self, fn):
        self.fn = fn

    def predict(self, X):
        return self.fn(X)


def _smoke(model, X=X_REG, y=Y_REG):
    return SmokeCheck().run(CheckContext(model, {}, X=X, y=pd.Series(y)))


def test_good_models_pass():
    assert _smoke(LinearRegression().fit(X_REG, Y_REG)).status == "pass"
    res = _smoke(LogisticRegression().fit(X_CLF, Y_CLF), X_CLF, Y_CLF)
    assert res.status == "pass"
    assert res.metrics["proba_max_sum_error"] < 1e-9


def test_nan_output_fails():
    res = _smoke(Regressor(lambda X: np.where(X["a"] > 0, np.nan, 1.0)))
    assert res.status == "fail"
    assert "NaN" in res.message


def test_inf_output_fails():
    res = _smoke(Regressor(lambda X: np.full(len(X), np.inf)))
    assert res.status == "fail"
    assert "infinite" in res.message


@pytest.mark.parametrize(
    "fn, words",
    [
        (lambda X: np.zeros(len(X) - 1), "for 200 rows"),
        (lambda X: np.zeros((len(X), 3)), "expected (200,)"),
        (lambda X: 0.0, "a scalar"),
    ],
    ids=["too-few-rows", "two-dimensional", "scalar"],
)
def test_wrong_output_shape_fails(fn, words):
    res = _smoke(Regressor(fn))
    assert res.status == "fail"
    assert words in res.message


def test_non_numeric_regression_output_fails():
    res = _smoke(Regressor(lambda X: np.array(["x"] * len(X), dtype=object)))
    assert res.status == "fail"
    assert "dtype" in res.message


def test_non_deterministic_predict_fails():
    rng = np.random.default_rng(0)
    res = _smoke(Regressor(lambda X: rng.normal(size=len(X))))
    assert res.status == "fail"
    assert "not deterministic" in res.message


def test_probabilities_that_do_not_sum_to_one_fail():
    base = LogisticRegression().fit(X_CLF, Y_CLF)

    class BadProba:
        _estimator_type = "classifier"
        classes_ = base.classes_

        def predict(self, X):
            return base.predict(X)

        def predict_proba(self, X):
            return base.predict_proba(X) * 0.9

    res = _smoke(BadProba(), X_CLF, Y_CLF)
    assert res.status == "fail"
    assert "sum to 1" in res.message


def test_unknown_labels_fail():
    res = SmokeCheck().run(
        CheckContext(
            Regressor(lambda X: np.full(len(X), 7)),
            {},
            X=X_CLF,
            y=pd.Series(Y_CLF),
            task="classification",
        )
    )
    assert res.status == "fail"
    assert "never seen in y" in res.message
