"""scikit-learn's trees, forests and histogram gradient boostings are given their input
row-major: the same predictions; everything else is given its input as it is."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.datasets import make_classification
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from handoff_agent.checks._layout import row_major


@pytest.fixture(scope="module")
def data():
    """Floats, ints and a bool column, as a DataFrame from Parquet has them (several blocks)."""
    X, y = make_classification(600, n_features=5, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(5)])
    frame["n"] = np.random.default_rng(0).integers(0, 40, len(frame))
    frame["flag"] = frame["x0"] > 0
    return frame, y


def _responses(model, X):
    out = [model.predict(X)]
    for name in ("predict_proba", "decision_function", "score_samples"):
        if hasattr(model, name):
            out.append(getattr(model, name)(X))
    return out


@pytest.mark.parametrize(
    "model",
    [
        RandomForestClassifier(20, random_state=0),
        ExtraTreesRegressor(20, random_state=0),
        DecisionTreeClassifier(random_state=0),
        IsolationForest(n_estimators=20, random_state=0),
        HistGradientBoostingClassifier(max_iter=20, random_state=0),
        HistGradientBoostingRegressor(max_iter=20, random_state=0),
    ],
    ids=lambda m: type(m).__name__,
)
@pytest.mark.parametrize("as_array", [False, True])
def test_trees_predict_the_same_numbers_from_a_row_major_copy(data, model, as_array):
    X, y = data
    X = X.to_numpy(dtype=float) if as_array else X  # column-major, as pandas gives it
    model.fit(X, y)
    dtype = np.float64 if "Hist" in type(model).__name__ else np.float32  # the model's own
    # What the model would make of X itself is column-major: the reason for the copy.
    assert not np.asarray(X, dtype=dtype).flags.c_contiguous
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names"
        given = row_major(model, X)
        got = _responses(model, given)
    assert np.asarray(given).flags.c_contiguous and np.asarray(given).dtype == dtype
    if not as_array:
        assert list(given.columns) == list(X.columns)
    for a, b in zip(_responses(model, X), got, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the cast, both ways
def test_a_value_too_large_for_float32_still_fails_as_sklearn_says(data):
    X, y = data
    model = RandomForestClassifier(5, random_state=0).fit(X, y)
    X = X.copy()
    X.loc[3, "x1"] = 1e300
    with pytest.raises(ValueError, match="too large for dtype") as theirs:
        model.predict(X)
    with pytest.raises(ValueError, match="too large for dtype") as ours:
        model.predict(row_major(model, X))
    assert str(ours.value) == str(theirs.value)


def test_other_models_and_inputs_are_given_x_as_it_is(data):
    X, y = data
    forest = RandomForestClassifier(5, random_state=0).fit(X, y)

    class MyForest(RandomForestClassifier):
        pass

    others = [
        LogisticRegression(max_iter=500).fit(X, y),  # would predict in float32
        make_pipeline(StandardScaler(), RandomForestClassifier(5)).fit(X, y),
        GradientBoostingClassifier(n_estimators=5).fit(X, y),  # asks sklearn for C itself
        MyForest(5, random_state=0).fit(X, y),  # a subclass may predict another way
        # categorical features: encoded by the model's own preprocessing
        HistGradientBoostingClassifier(max_iter=5, categorical_features=["n"]).fit(X, y),
    ]
    for model in others:
        assert row_major(model, X) is X
    nullable = X.astype({"n": "Int64"})
    text = X.assign(city="Paris")
    categories = X.assign(n=X["n"].astype("category"))
    csr = sparse.csr_matrix(X.to_numpy(dtype=float))
    for given in (nullable, text, categories, csr, X["x0"], X["x0"].to_numpy()):
        assert row_major(forest, given) is given
