"""Partial dependence with one stacked predict equals sklearn's (grid values and averages)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.inspection import partial_dependence
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

from handoff_agent.checks import _dependence
from handoff_agent.checks.api import CheckContext
from handoff_agent.checks.explainability import ExplainabilityCheck
from handoff_agent.checks.explainability import _dependence as check_pdp

CFG = ExplainabilityCheck.defaults
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def frame(X, prefix="x"):
    return pd.DataFrame(X, columns=[f"{prefix}{i}" for i in range(X.shape[1])])


def binary_data():
    X, y = make_classification(300, n_features=5, n_informative=3, random_state=0)
    X = frame(X)
    X["flag"] = (X["x0"] > 0).astype(int)  # two values: categorical
    return X, y


def assert_same(ours, theirs):
    grid, average = ours
    assert len(theirs["grid_values"]) == 1
    if np.asarray(grid).dtype.kind in "fiub":
        np.testing.assert_allclose(grid, theirs["grid_values"][0], **TIGHT)
    else:  # strings, categories
        np.testing.assert_array_equal(grid, theirs["grid_values"][0])
    assert np.shape(average) == np.shape(theirs["average"])
    np.testing.assert_allclose(average, theirs["average"], **TIGHT)


def stacked(model, X, j, categorical=False, **kw):
    got = _dependence.partial_dependence(model, X, j, categorical=categorical, **kw)
    return got["grid_values"][0], got["average"]


def sklearn_pdp(model, X, key, categorical=False, **kw):
    return partial_dependence(
        model,
        X,
        [key],
        categorical_features=[key] if categorical else None,
        grid_resolution=CFG["grid_resolution"],
        kind="average",
        **kw,
    )


@pytest.mark.parametrize("feature", ["x1", "x3"])
def test_binary_forest_on_a_dataframe(feature):
    X, y = binary_data()
    model = RandomForestClassifier(20, random_state=0).fit(X, y)
    j = list(X.columns).index(feature)
    assert _dependence.handled(model, X, j, False)
    got = _dependence.partial_dependence(model, X, j, grid_resolution=20)
    assert got["predict_calls"] == 1
    assert got["average"].shape == (1, 20)  # the positive class only
    assert_same((got["grid_values"][0], got["average"]), sklearn_pdp(model, X, feature))


def test_two_valued_feature_is_categorical():
    X, y = binary_data()
    model = RandomForestClassifier(20, random_state=0).fit(X, y)
    grid, average, categorical = check_pdp(model, X, "flag", CFG)
    assert categorical and list(grid) == [0, 1]
    assert_same((grid, average), sklearn_pdp(model, X, "flag", categorical=True))


def test_multiclass_logistic_regression_gives_a_curve_per_class():
    X, y = make_classification(
        300, n_features=5, n_informative=3, n_classes=3, n_clusters_per_class=1, random_state=1
    )
    X = frame(X)
    model = LogisticRegression(max_iter=500).fit(X, y)
    grid, average, _ = check_pdp(model, X, "x2", CFG)
    assert average.shape == (3, 20)
    assert_same((grid, average), sklearn_pdp(model, X, "x2"))


@pytest.mark.parametrize("classes", [2, 3])
def test_decision_function_when_there_is_no_predict_proba(classes):
    X, y = make_classification(
        300, n_features=4, n_informative=3, n_redundant=0, n_classes=classes, random_state=2
    )
    X = frame(X)
    model = LinearSVC().fit(X, y)
    assert _dependence.handled(model, X, 0, False)
    got = stacked(model, X, 0, grid_resolution=20)
    assert got[1].shape == (1 if classes == 2 else classes, 20)
    assert_same(got, sklearn_pdp(model, X, "x0"))


def test_regressors():
    X, y = make_regression(300, n_features=4, random_state=0)
    X = frame(X)
    extra = ExtraTreesRegressor(20, random_state=0).fit(X, y)  # sklearn's default: brute
    assert _dependence.handled(extra, X, 1, False)
    assert_same(check_pdp(extra, X, "x1", CFG)[:2], sklearn_pdp(extra, X, "x1"))
    # a random forest regressor goes to sklearn's recursion by default; stacked it equals brute
    forest = RandomForestRegressor(20, random_state=0).fit(X, y)
    assert not _dependence.handled(forest, X, 1, False)
    assert_same(stacked(forest, X, 1), sklearn_pdp(forest, X, "x1", method="brute"))
    assert_same(check_pdp(forest, X, "x1", CFG)[:2], sklearn_pdp(forest, X, "x1"))


def test_gradient_boosting_keeps_sklearns_recursion():
    X, y = make_regression(300, n_features=4, random_state=0)
    X = frame(X)
    model = GradientBoostingRegressor(n_estimators=20, random_state=0).fit(X, y)
    assert not _dependence.handled(model, X, 0, False)
    assert_same(check_pdp(model, X, "x0", CFG)[:2], sklearn_pdp(model, X, "x0"))


def test_numpy_array_input():
    X, y = binary_data()
    model = RandomForestClassifier(20, random_state=0).fit(X.to_numpy(), y)
    for feature in ("x2", "flag"):
        j = list(X.columns).index(feature)
        grid, average, categorical = check_pdp(model, X, feature, CFG, kind="array")
        assert_same((grid, average), sklearn_pdp(model, X.to_numpy(), j, categorical))


def test_pipeline_with_a_column_transformer_and_a_string_category():
    X, y = binary_data()
    X = X.drop(columns="flag")
    X["colour"] = np.array(["red", "green", "blue"])[np.arange(len(X)) % 3]
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), ["x0", "x1", "x2", "x3", "x4"]),
            ("cat", OneHotEncoder(), ["colour"]),
        ]
    )
    model = make_pipeline(pre, LogisticRegression()).fit(X, y)
    for feature in ("x4", "colour"):
        grid, average, categorical = check_pdp(model, X, feature, CFG)
        assert categorical == (feature == "colour")
        assert_same((grid, average), sklearn_pdp(model, X, feature, categorical))


def test_a_categorical_dtype_keeps_its_dtype_when_stacked():
    X, y = binary_data()
    X = X.drop(columns="flag")
    X["size"] = pd.Categorical(np.array(["S", "M", "L", "XL"])[np.arange(len(X)) % 4])
    pre = ColumnTransformer([("cat", OneHotEncoder(), ["size"])], remainder="passthrough")
    model = make_pipeline(pre, RandomForestClassifier(10, random_state=0)).fit(X, y)
    assert _dependence._stack(X, 5, np.array(["M", "S"]))["size"].dtype == X["size"].dtype
    assert_same(check_pdp(model, X, "size", CFG)[:2], sklearn_pdp(model, X, "size", True))


def test_chunks_give_the_same_result():
    X, y = binary_data()
    model = RandomForestClassifier(20, random_state=0).fit(X, y)
    whole = _dependence.partial_dependence(model, X, 1, grid_resolution=20)
    row = X.memory_usage(index=False).sum() / len(X)
    small = int(row * len(X) * 6)  # 6 grid values a chunk: 4 calls
    chunked = _dependence.partial_dependence(model, X, 1, grid_resolution=20, chunk_bytes=small)
    assert (whole["predict_calls"], chunked["predict_calls"]) == (1, 4)
    np.testing.assert_allclose(chunked["average"], whole["average"], **TIGHT)


def test_grid_equals_sklearns():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=300)
    few = rng.integers(0, 7, 300).astype(float)  # fewer unique values than the resolution
    for values, categorical in ((spread, False), (few, False), (few, True)):
        ours = _dependence.grid(values, categorical, 20)
        theirs = partial_dependence(
            LogisticRegression().fit(values[:, None], values > np.median(values)),
            values[:, None],
            [0],
            categorical_features=[0] if categorical else None,
            grid_resolution=20,
        )["grid_values"][0]
        np.testing.assert_allclose(ours, theirs, **TIGHT)
    with pytest.raises(ValueError, match="percentiles are too close"):
        _dependence.grid(np.r_[np.zeros(290), np.arange(10.0) + 1], False, 5)


def test_integer_features_are_stacked_and_other_models_are_left_to_sklearn():
    X, y = binary_data()
    X["count"] = np.arange(len(X)) % 50  # integers, not categorical: refused by sklearn 1.9
    model = RandomForestClassifier(10, random_state=0).fit(X, y)
    assert _dependence.handled(model, X, list(X.columns).index("count"), False)
    assert _dependence.handled(model, X, list(X.columns).index("count"), True)

    class Scored:  # a score of its own: not stackable
        _estimator_type = "classifier"
        classes_ = np.array([0, 1])

        def predict(self, X):
            return model.predict(X)

        def predict_proba(self, X):
            return model.predict_proba(X)

        def score(self, X, y):
            return 0.0

    assert not _dependence.handled(Scored(), X, 0, False)


def test_an_integer_grid_stays_integer():
    ages = np.random.default_rng(0).integers(18, 90, 300)
    axis = _dependence.grid(ages, False, 20)
    assert axis.dtype == ages.dtype and len(axis) == len(set(axis.tolist())) > 10
    assert np.percentile(ages, 5) - 1 <= axis[0] < axis[-1] <= np.percentile(ages, 95) + 1
    few = ages % 7  # fewer unique values than the resolution: those values
    np.testing.assert_array_equal(_dependence.grid(few, False, 20), np.arange(7))


def people(n=600):
    """An int64 ``age`` that decides the label, a string ``city`` and a float ``income``."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "city": rng.choice(["north", "south", "east"], n),
            "income": rng.normal(size=n),
        }
    )
    y = ((X["age"] - 50) / 10 + (X["city"] == "north") + rng.normal(size=n) / 2 > 0).astype(int)
    return X, pd.Series(y)


def encoded(final):
    pre = ColumnTransformer(
        [("num", StandardScaler(), ["age", "income"]), ("cat", OneHotEncoder(), ["city"])]
    )
    return make_pipeline(pre, final)


def booster(name):
    """lightgbm's or xgboost's classifier, the city as a pandas category (their own input)."""
    if name == "lightgbm":
        return pytest.importorskip("lightgbm").LGBMClassifier(n_estimators=20, verbose=-1)
    return pytest.importorskip("xgboost").XGBClassifier(n_estimators=20, enable_categorical=True)


@pytest.mark.parametrize(
    "make",
    [
        lambda: encoded(LogisticRegression()),
        lambda: encoded(HistGradientBoostingClassifier(max_iter=20)),
        lambda: HistGradientBoostingClassifier(max_iter=20),  # sklearn's recursion
        lambda: booster("lightgbm"),
        lambda: booster("xgboost"),
    ],
    ids=["pipeline-logistic", "pipeline-hgb", "hgb-recursion", "lightgbm", "xgboost"],
)
def test_the_check_plots_an_integer_feature(make):
    # Given a model whose top feature is an int64 column
    X, y = people()
    model = make()
    if not hasattr(model, "steps"):  # a bare model: the city as a category, or dropped
        keep = "category" if type(model).__module__.split(".")[0] != "sklearn" else None
        X = X.assign(city=X["city"].astype("category")) if keep else X.drop(columns="city")
    model.fit(X, y)
    # When the explainability check runs
    res = ExplainabilityCheck().run(CheckContext(model, {}, X=X, y=y), n_repeats=2)
    # Then age, the top feature, gets its partial dependence plot and no note
    assert res.status == "pass", res.message
    assert res.metrics["top_features"][0] == "age"
    assert "pdp_age" in res.plots
    assert "No partial dependence" not in res.message, res.message
    assert X["age"].dtype == np.int64  # the user's data is left as it was


def test_the_check_plots_the_stacked_curves():
    X, y = binary_data()
    model = RandomForestClassifier(20, random_state=0).fit(X, y)
    res = ExplainabilityCheck().run(CheckContext(model, {}, X=X, y=pd.Series(y)), n_repeats=2)
    assert res.status == "pass"
    assert set(res.plots) == {f"pdp_{f}" for f in res.metrics["top_features"]}
    assert "No partial dependence" not in res.message


def test_a_category_with_missing_values_gets_its_plot_over_its_categories():
    """An imputing pipeline's text column with NaN beside its strings: sklearn cannot sort
    its values for a grid, so it had no plot; the grid is its categories, NaN left out."""
    from sklearn.impute import SimpleImputer

    X, y = binary_data()
    X = X.drop(columns="flag")
    colour = np.array(["red", "green", "blue"], dtype=object)[np.arange(len(X)) % 3]
    colour[::7] = np.nan
    X["colour"] = colour
    y = np.where(X["colour"] == "red", 1, y)  # colour matters: among the top features
    cat = make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder())
    pre = ColumnTransformer([("num", "passthrough", list(X.columns[:5])), ("cat", cat, ["colour"])])
    model = make_pipeline(pre, LogisticRegression()).fit(X, y)
    grid, average, categorical = check_pdp(model, X, "colour", CFG)
    assert categorical and list(grid) == ["blue", "green", "red"]
    assert average[0][2] > average[0][0]  # red raises the positive class
    res = ExplainabilityCheck().run(CheckContext(model, {}, X=X, y=pd.Series(y)), n_repeats=2)
    assert "pdp_colour" in res.plots, res.message
