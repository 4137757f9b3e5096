"""The serving worker's fast paths answer exactly what the slow ones did: a numeric request
becomes one float64 block (the same frame as column by column), the skops backend derives
``predict`` from ``predict_proba`` only for classifiers whose ``predict`` is that argmax (and
asks ``predict`` on a tie) and hands the block itself only to a model that answers it as it
answers the frame, and the ONNX backend feeds the block as it feeds the frame."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from handoff_agent.serving import worker
from handoff_agent.serving.backend import SkopsBackend
from handoff_agent.serving.inputs import validate


def request_of(frame: pd.DataFrame, signature=None) -> dict:
    """What the server sends a worker for ``frame``'s rows, through JSON as on the socket."""
    signature = signature or [{"name": c, "dtype": str(frame[c].dtype)} for c in frame.columns]
    columns = {
        c: [None if isinstance(v, float) and v != v else v for v in frame[c].tolist()]
        for c in frame.columns
    }
    request, _ = validate(columns, signature, list(frame.columns), 1000)
    return json.loads(json.dumps(request))


def by_columns(request: dict) -> pd.DataFrame:
    """The frame as the worker built it before the block: column by column, then cast."""
    frame = pd.DataFrame({c: request["data"][c] for c in request["columns"]})
    for c, want in request["dtypes"].items():
        if str(frame[c].dtype) != want:
            frame[c] = frame[c].astype(want)
    return frame


def test_a_numeric_request_is_one_block_and_the_same_frame():
    frame = pd.DataFrame(
        {"a": [1.5, np.nan, 3.0], "b": [1.0, 2.0, 2.0**60], "c": [0.0, -1e308, 7.25]}
    )
    request = request_of(frame)
    request["data"]["b"] = [1, 2, 2**60]  # integers in a float column: cast as before
    block = worker.float_block(request)
    assert block.shape == (3, 3) and block.dtype == np.float64
    pd.testing.assert_frame_equal(worker.frame_of(request), by_columns(request))
    one = request_of(frame.iloc[:1])
    pd.testing.assert_frame_equal(worker.frame_of(one), by_columns(one))


def test_other_signatures_keep_the_column_by_column_frame():
    frame = pd.DataFrame({"x": [1.0, 2.0], "n": [1, 2], "city": ["paris", "nice"]})
    request = request_of(frame)
    assert worker.float_block(request) is None
    pd.testing.assert_frame_equal(worker.frame_of(request), by_columns(request))
    request["data"]["x"] = ["oops", 1.0]  # what the server refuses; the worker still answers
    assert worker.float_block({**request, "dtypes": {"x": "float64"}, "columns": ["x"]}) is None


def _classifiers():
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

    return {
        "logreg": LogisticRegression(max_iter=500),
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
        "forest": RandomForestClassifier(n_estimators=7, random_state=0),
        "extra_trees": ExtraTreesClassifier(n_estimators=7, random_state=0),
        "tree": DecisionTreeClassifier(max_depth=3, random_state=0),
        "extra_tree": ExtraTreeClassifier(random_state=0),
    }


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("kind", list(_classifiers()))
def test_known_classifiers_are_called_once_and_predict_as_predict(kind, classes):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(120, 4)), columns=list("abcd"))
    edges = [0.0] if classes == 2 else [-0.5, 0.5]
    y = np.array(["no", "yes", "maybe"])[np.digitize(X["a"] + X["b"] / 3, edges)]
    model = _classifiers()[kind].fit(X, y)
    backend = SkopsBackend(model, {})
    assert backend.classes is not None
    calls = []
    model.predict = lambda frame: calls.append(frame) or type(model).predict(model, frame)
    out = backend.predict(X)
    assert out["predict"] == type(model).predict(model, X).tolist()
    assert out["predict_proba"] == model.predict_proba(X).tolist()
    assert calls == []  # no tie in these rows: predict_proba alone answered


def test_a_tie_asks_predict():
    from sklearn.tree import DecisionTreeClassifier

    X = pd.DataFrame({"a": [0.0, 0.0, 1.0, 1.0]})
    model = DecisionTreeClassifier().fit(X, ["b", "a", "a", "a"])  # a leaf at 1/2 each
    backend = SkopsBackend(model, {})
    calls = []
    model.predict = lambda frame: calls.append(1) or type(model).predict(model, frame)
    out = backend.predict(X)
    assert calls == [1]
    assert out["predict"] == type(model).predict(model, X).tolist()


def test_other_models_are_called_for_both():
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    class Mine(LogisticRegression):  # a subclass may predict otherwise
        pass

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    for model in (KNeighborsClassifier(n_neighbors=1), Mine()):
        model.fit(X, [0, 0, 1, 1])
        backend = SkopsBackend(model, {})
        assert backend.classes is None
        assert backend.predict(X) == {
            "predict": model.predict(X).tolist(),
            "predict_proba": model.predict_proba(X).tolist(),
        }


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_the_skops_backend_takes_the_block_only_where_the_model_answers_it_alike():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(150, 3)), columns=["x", "y", "z"])
    y = (X["x"] - X["z"] > 0).astype(int)
    plain = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    backend = SkopsBackend(plain, {}, sample=X)
    assert backend.array_columns == ["x", "y", "z"]
    for i in range(0, 150, 13):
        request = request_of(X.iloc[i : i + 3])
        from_block = backend.predict_block(worker.float_block(request), request["columns"])
        assert from_block == backend.predict(by_columns(request))
        assert worker.answer(backend, request)["outputs"] == from_block
    unnamed = LogisticRegression().fit(X.to_numpy(), y)  # fitted on an array: takes one
    assert SkopsBackend(unnamed, {}, sample=X).array_columns == ["x", "y", "z"]
    # A model that picks columns by name, or was fitted in another order, keeps its frame
    by_name = make_pipeline(ColumnTransformer([("s", StandardScaler(), ["z", "x"])]),
                            LogisticRegression()).fit(X, y)  # fmt: skip
    request = request_of(X.iloc[:3])
    for model in (by_name, LogisticRegression().fit(X[["z", "y", "x"]], y)):
        other = SkopsBackend(model, {}, sample=X)
        assert other.array_columns is None
        assert other.predict_block(worker.float_block(request), request["columns"]) is None
    assert worker.answer(SkopsBackend(by_name, {}, sample=X), request)["outputs"] == {
        "predict": by_name.predict(X.iloc[:3]).tolist(),
        "predict_proba": by_name.predict_proba(X.iloc[:3]).tolist(),
    }
    # and so does any model when the sample is not all float64, or is missing
    assert SkopsBackend(plain, {}, sample=X.astype({"y": "float32"})).array_columns is None
    assert SkopsBackend(plain, {}).array_columns is None


def _forests():
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    return {
        "forest": RandomForestClassifier(n_estimators=25, random_state=0),
        "extra_trees": ExtraTreesClassifier(n_estimators=25, random_state=0),
        "forest_regressor": RandomForestRegressor(n_estimators=25, random_state=0),
        "extra_trees_regressor": ExtraTreesRegressor(n_estimators=25, random_state=0),
    }


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("kind", list(_forests()))
def test_a_forest_on_the_block_sums_its_own_trees_to_the_same_floats(kind, scaled):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(300, 6)) * 1e3, columns=list("abcdef"))
    target = X["a"] - 2 * X["c"] + rng.normal(size=300) * 300
    forest = _forests()[kind]
    model = make_pipeline(StandardScaler(), forest) if scaled else forest
    model.fit(X, target > 0 if "regressor" not in kind else target)
    backend = SkopsBackend(model, {}, sample=X)
    assert backend.forest is not None and backend.array_columns == list("abcdef")
    fresh = X * 1.37 + 11.0  # rows the parity check did not see
    expected = {i: model.predict(fresh.iloc[i : i + 4]).tolist() for i in range(0, 300, 37)}
    probas = {
        i: model.predict_proba(fresh.iloc[i : i + 4]).tolist()
        for i in expected
        if "regressor" not in kind
    }
    # On the block the forest's own methods are not called, and answer alike
    own = type(forest)
    methods = ["predict"] + (["predict_proba"] if probas else [])
    for method in methods:
        setattr(forest, method, None)
    for i in expected:
        got = worker.answer(backend, request_of(fresh.iloc[i : i + 4]))["outputs"]
        assert got["predict"] == expected[i]
        assert got.get("predict_proba") == probas.get(i)
    # A NaN goes to the forest's own method (scikit-learn >= 1.4 routes it down the trees)
    for method in methods:
        delattr(forest, method)
    assert forest.predict == own.predict.__get__(forest)
    rows = fresh.iloc[:2].assign(b=[np.nan, 1.0])
    answer = worker.answer(backend, request_of(rows))
    assert answer["outputs"]["predict"] == model.predict(rows).tolist()


def test_only_plain_forests_have_their_trees_summed():
    from sklearn.ensemble import RandomForestClassifier

    class Mine(RandomForestClassifier):  # a subclass may average otherwise
        pass

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0] * 5, "b": [1.0, 0.0, 1.0, 0.0] * 5})
    assert SkopsBackend(Mine(n_estimators=3).fit(X, [0, 0, 1, 1] * 5), {}).forest is None
    two_outputs = RandomForestClassifier(n_estimators=3).fit(X, np.c_[[0, 1] * 10, [1, 0] * 10])
    assert SkopsBackend(two_outputs, {}).forest is None


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
@pytest.mark.parametrize("scaling", ["bare", "scaled", "scaled_no_mean", "two_scalers"])
def test_a_two_class_logistic_regression_on_the_block_gives_its_own_floats(scaling):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(8)
    X = pd.DataFrame(rng.normal(size=(300, 5)) * [1, 10, 1e3, 0.1, 1], columns=list("abcde"))
    y = np.where(X["a"] + X["c"] / 1e3 + rng.normal(size=300) > 0, "yes", "no")
    steps = {
        "bare": [],
        "scaled": [StandardScaler()],
        "scaled_no_mean": [StandardScaler(with_mean=False)],
        "two_scalers": [StandardScaler(), StandardScaler(with_std=False)],
    }[scaling]
    logreg = LogisticRegression(C=0.7, max_iter=2000)
    model = make_pipeline(*steps, logreg).fit(X, y) if steps else logreg.fit(X, y)
    backend = SkopsBackend(model, {}, sample=X)
    assert backend.linear is not None and backend.array_columns == list("abcde")
    fresh = X * 1.21 - 0.5  # rows the agreement check did not see
    blocks = {i: worker.float_block(request_of(fresh.iloc[i : i + 3])) for i in range(0, 300, 17)}
    # What the model answers for the array the worker holds (a product's last bit depends on
    # the array's layout: scikit-learn's answer for the frame may differ there), and for one row
    expected = {i: model.predict(block).tolist() for i, block in blocks.items()}
    probas = {i: model.predict_proba(block).tolist() for i, block in blocks.items()}
    singles = {i: model.predict_proba(block[:1].copy()).tolist() for i, block in blocks.items()}
    # On the block scikit-learn's own methods are not called, and answer alike
    for step in [*steps, logreg]:
        for method in ("transform", "predict", "predict_proba"):
            if hasattr(step, method):
                setattr(step, method, None)
    for i in expected:
        got = worker.answer(backend, request_of(fresh.iloc[i : i + 3]))["outputs"]
        assert got == {"predict": expected[i], "predict_proba": probas[i]}
        one = worker.answer(backend, request_of(fresh.iloc[i : i + 1]))["outputs"]
        assert one["predict_proba"] == singles[i]
    # A NaN goes to scikit-learn, which says what is wrong
    for step in [*steps, logreg]:
        vars(step).pop("transform", None), vars(step).pop("predict", None)
        vars(step).pop("predict_proba", None)
    answer = worker.answer(backend, request_of(fresh.iloc[:2].assign(b=[np.nan, 1.0])))
    assert not answer["ok"] and "NaN" in answer["error"]


def test_only_plain_two_class_logistic_regressions_are_computed_directly():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    class Mine(LogisticRegression):  # a subclass may compute otherwise
        pass

    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(90, 3)), columns=list("abc"))
    two, three = (X["a"] > 0).astype(int), np.digitize(X["a"], [-0.5, 0.5])
    for model in (
        Mine().fit(X, two),
        LogisticRegression().fit(X, three),
        make_pipeline(MinMaxScaler(), LogisticRegression()).fit(X, two),
    ):
        assert SkopsBackend(model, {}, sample=X).linear is None
    # Kernels that do not give the model's floats on the sample are dropped
    backend = SkopsBackend(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, two), {}, X)
    assert backend.linear is not None
    assert not backend._kernels_agree(([], lambda rows: np.zeros((len(rows), 2))))
    assert SkopsBackend(LogisticRegression().fit(X, two), {}).linear is None  # no sample


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="no onnxruntime")
@pytest.mark.parametrize("by_name", [False, True])
def test_the_onnx_backend_feeds_the_block_as_the_frame(by_name):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from handoff_agent import onnx_convert
    from handoff_agent.serving.onnx_backend import OnnxBackend

    rng = np.random.default_rng(2)
    X = pd.DataFrame(rng.normal(size=(80, 3)), columns=["x", "y", "z"])
    y = (X["x"] + X["z"] > 0).astype(int)
    prep = (
        ColumnTransformer([("s", StandardScaler(), ["z", "x"])], remainder="passthrough")
        if by_name
        else StandardScaler()
    )
    model = make_pipeline(prep, LogisticRegression()).fit(X, y)
    data, _ = onnx_convert.to_onnx(model, X, "classification")
    backend = OnnxBackend(data)
    assert backend.meta["layout"] == ("columns" if by_name else "tensor")
    for i in range(0, 80, 9):
        request = request_of(X.iloc[i : i + 3])
        block = worker.float_block(request)
        from_block = backend.predict_block(block, request["columns"])
        assert from_block is not None
        assert from_block == backend.predict(by_columns(request))
        assert worker.answer(backend, request)["outputs"] == from_block
    assert backend.predict_block(block[:, :2], ["x", "y"]) is None  # a column missing


def test_a_text_column_the_model_imputes_takes_a_missing_value_as_parquet_reads_it():
    """Under pandas 3 the evaluation sample's text column reads back as the string dtype, not
    object: a null there was refused ("cannot take a missing value") though the model's
    imputer takes it, as it did at push."""
    import io

    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from handoff_agent.parquet_bytes import read_frame

    rng = np.random.default_rng(4)
    plan = rng.choice(["basic", "pro", None], 200).astype(object)
    X = pd.DataFrame({"plan": plan, "charges": rng.normal(size=200)})
    y = (X["charges"] > 0).astype(int)
    text = make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"), OneHotEncoder())
    model = make_pipeline(
        make_column_transformer((text, ["plan"]), ("passthrough", ["charges"])),
        LogisticRegression(),
    ).fit(X, y)
    buf = io.BytesIO()
    X.to_parquet(buf, index=False)
    sample = read_frame(buf.getvalue())  # as the worker reads the bundle's member
    assert "plan" in SkopsBackend(model, {}, sample=sample).nan_columns()
