"""explainability on wide data: a bounded number of columns is ranked, and the user is told."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from handoff_agent.checks import _permutation
from handoff_agent.checks.api import CheckContext
from handoff_agent.checks.explainability import ExplainabilityCheck


class Counted(LogisticRegression):
    """A logistic regression that counts the rows it is asked to predict."""

    rows = 0

    def predict(self, X):
        Counted.rows += len(X)
        return super().predict(X)

    def predict_proba(self, X):
        Counted.rows += len(X)
        return super().predict_proba(X)


def wide(columns, rows=600):
    """``columns`` normal columns of which the first five decide the label."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(rows, columns)), columns=[f"f{i}" for i in range(columns)])
    y = pd.Series((X.iloc[:, :5].to_numpy() @ [3, 2.5, 2, 1.5, 1] > 0).astype(int))
    return X, y


@pytest.fixture
def checked():
    def run(columns, **settings):
        X, y = wide(columns)
        model = Counted(max_iter=500).fit(X, y)
        Counted.rows = 0
        res = ExplainabilityCheck().run(CheckContext(model, {}, X=X, y=y), **settings)
        return res, Counted.rows

    return run


def test_wide_data_ranks_the_columns_that_move_the_predictions(checked):
    # Given 400 columns and a budget that cannot rank all of them on min_rows rows
    res, _ = checked(400, seconds=0.001, plots=False)
    # Then the check passes, ranking the 50 columns the screen found, and says what it sampled
    assert res.status == "pass", res.message
    assert (
        "400 columns are too many to rank by permutation within the 0.001 s budget: ranked "
        "the 50 whose shuffling (once, on 125 rows) moved the model's predictions most; the "
        "other 350 were not ranked." in res.message
    )
    assert res.metrics["screened"] == {"columns": 400, "ranked": 50, "screen_rows": 125}
    assert len(res.tables["importance"]) == 50
    assert set(res.metrics["top_features"]) <= {"f0", "f1", "f2", "f3", "f4"}


def test_the_rows_predicted_grow_with_the_width_not_its_square(checked):
    # Given data twice as wide, on the same tight budget
    _, narrower = checked(400, seconds=0.001, plots=False)
    _, wider = checked(800, seconds=0.001, plots=False)
    # Then about as many rows are predicted (every column on every row would be 4x)
    assert wider < 1.5 * narrower
    assert narrower < 400 * 3 * 500  # fewer than every column, repeat and min_rows row


def test_narrow_data_is_never_screened(checked):
    # Given 20 columns and a budget too small for min_rows over all of them
    res, _ = checked(20, seconds=1e-6, plots=False)
    # Then every column is ranked, as before
    assert len(res.tables["importance"]) == 20
    assert "screened" not in res.metrics and "too many to rank" not in res.message
    assert res.metrics["rows"] == 500


def test_the_screen_is_the_same_on_a_busy_machine():
    # Given the same wide data timed fast, then slow
    X, y = wide(400)
    model = LogisticRegression(max_iter=500).fit(X, y)
    got = [
        _permutation.permutation_importance(model, X, y, seconds=s, n_repeats=2)
        for s in (1e-4, 1e-2)
    ]
    # Then the same columns are ranked
    assert got[0]["columns"] == got[1]["columns"] and len(got[0]["columns"]) == 50


class OwnClass:
    """Someone else's classifier: predict and predict_proba, no ``score`` of its own."""

    def __init__(self, inner):
        self.inner, self.classes_ = inner, inner.classes_

    def predict(self, X):
        Counted.rows += len(X)
        return self.inner.predict(X)

    def predict_proba(self, X):
        Counted.rows += len(X)
        return self.inner.predict_proba(X)


def test_a_class_without_a_score_of_its_own_is_budgeted_too():
    # Given wide data and a model of someone else's class, scored by the accuracy of its predict
    X, y = wide(400)
    model = OwnClass(LogisticRegression(max_iter=500).fit(X, y))
    Counted.rows = 0
    res = ExplainabilityCheck().run(CheckContext(model, {}, X=X, y=y), seconds=0.001, plots=False)
    # Then it is screened and ranked within the budget, as sklearn's own classes are
    assert res.status == "pass", res.message
    assert res.metrics["screened"] == {"columns": 400, "ranked": 50, "screen_rows": 125}
    assert set(res.metrics["top_features"]) <= {"f0", "f1", "f2", "f3", "f4"}
    assert Counted.rows < 400 * 5 * 500  # not every column, repeat and row (sklearn's call)
