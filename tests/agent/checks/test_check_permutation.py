"""Stacked predicts split over threads give the array one call gives, and only for models
made of scikit-learn's own estimators."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from handoff_agent.checks import _permutation


class Recorder:
    """A response that keeps the length of every batch it was called with."""

    def __init__(self, respond):
        self.respond, self.calls = respond, []

    def __call__(self, X):
        self.calls.append(len(X))
        return self.respond(X)


class Doubler(TransformerMixin, BaseEstimator):
    """Someone else's step: it might keep state between calls."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.asarray(X) * 2


class Majority(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(_permutation, "_cores", lambda: 2)


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(10_000, n_features=6, random_state=0)
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(6)]), y


@pytest.mark.parametrize("response", ["predict", "predict_proba"])
@pytest.mark.parametrize("as_array", [False, True])
def test_a_forest_is_predicted_in_two_threads_with_the_same_result(
    two_cores, data, response, as_array
):
    X, y = data
    X = X.to_numpy() if as_array else X
    forest = RandomForestClassifier(20, random_state=0).fit(X, y)
    respond = Recorder(getattr(forest, response))
    got = _permutation.predict_rows(forest, respond, X)
    assert respond.calls == [5_000, 5_000]
    np.testing.assert_array_equal(got, getattr(forest, response)(X))


def test_a_pipeline_of_sklearns_estimators_is_split(two_cores, data):
    X, y = data
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    respond = Recorder(model.predict_proba)
    got = _permutation.predict_rows(model, respond, X)
    assert respond.calls == [5_000, 5_000]
    np.testing.assert_array_equal(got, model.predict_proba(X))


@pytest.mark.parametrize(
    "model",
    [Majority(), make_pipeline(Doubler(), LogisticRegression())],
    ids=["own class", "own step in a pipeline"],
)
def test_a_model_with_a_class_of_someone_elses_is_called_once(two_cores, data, model):
    X, y = data
    model.fit(X, y)
    respond = Recorder(model.predict)
    got = _permutation.predict_rows(model, respond, X)
    assert respond.calls == [10_000]
    np.testing.assert_array_equal(got, model.predict(X))


def test_few_rows_are_predicted_in_one_call(two_cores, data):
    X, y = data
    forest = RandomForestClassifier(5, random_state=0).fit(X, y)
    respond = Recorder(forest.predict)
    _permutation.predict_rows(forest, respond, X.iloc[: 2 * _permutation.SPLIT_ROWS - 1])
    assert respond.calls == [2 * _permutation.SPLIT_ROWS - 1]


def test_when_no_thread_can_start_the_rows_are_predicted_in_one_call(two_cores, data, monkeypatch):
    X, y = data
    forest = RandomForestClassifier(5, random_state=0).fit(X, y)

    def refuse(self, *args, **kwargs):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_permutation.ThreadPoolExecutor, "submit", refuse)
    respond = Recorder(forest.predict)
    got = _permutation.predict_rows(forest, respond, X)
    assert respond.calls == [10_000]
    np.testing.assert_array_equal(got, forest.predict(X))
