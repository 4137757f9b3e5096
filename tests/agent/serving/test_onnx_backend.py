"""The ONNX serving backend answers like the skops backend (``predict``, ``predict_proba``)
from the converted graph alone, says which input it cannot take, and falls back to skops when
onnxruntime or a converted graph is missing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/agent, for its helpers

from onnx_support import bundle_of, run_job

from handoff_agent import onnx_convert
from handoff_agent.serving import onnx_backend
from handoff_agent.serving.onnx_backend import OnnxBackend
from handoff_agent.serving.worker import described

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def mixed():
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(1)
    n = 200
    X = pd.DataFrame(
        {
            "income": rng.normal(50, 15, n),
            "age": rng.integers(18, 80, n).astype(float),
            "city": rng.choice(["paris", "lyon", "nice"], n),
        }
    )
    y = np.where(X["income"] > 50, "yes", "no")
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["income", "age"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                    ]
                ),
            ),
            ("clf", RandomForestClassifier(n_estimators=15, random_state=0)),
        ]
    ).fit(X, y)
    data, _ = onnx_convert.to_onnx(model, X, "classification")
    return model, X, data


def test_answers_like_the_skops_backend(mixed):
    model, X, data = mixed
    backend = OnnxBackend(data)
    assert backend.name == "onnx" and backend.columns == ["income", "age", "city"]
    out = backend.predict(X.iloc[:20])
    assert set(out) == {"predict", "predict_proba"}
    assert out["predict"] == model.predict(X.iloc[:20]).tolist()  # string labels, as fitted
    assert backend.class_labels() == model.classes_.tolist()  # predict_proba's column order
    np.testing.assert_allclose(out["predict_proba"], model.predict_proba(X.iloc[:20]), atol=1e-5)
    # Columns in another order, and extra ones, are fine: the graph takes them by name.
    shuffled = X.iloc[:3][["city", "age", "income"]].assign(extra=1)
    assert backend.predict(shuffled)["predict"] == model.predict(X.iloc[:3]).tolist()


def test_a_regressor_has_no_probabilities():
    from sklearn.linear_model import Ridge

    X = pd.DataFrame({"a": np.arange(30.0), "b": np.arange(30.0) ** 0.5})
    model = Ridge().fit(X, X["a"] * 2 + 1)
    data, _ = onnx_convert.to_onnx(model, X, "regression")
    backend = OnnxBackend(data)
    out = backend.predict(X.iloc[:4])
    assert set(out) == {"predict"} and backend.class_labels() is None
    np.testing.assert_allclose(out["predict"], model.predict(X.iloc[:4]), rtol=1e-5)


def test_a_classifier_without_predict_proba_serves_labels_only():
    from sklearn.linear_model import RidgeClassifier

    X = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 7})
    model = RidgeClassifier().fit(X, (X["a"] > 19).astype(int))
    data, meta = onnx_convert.to_onnx(model, X, "classification")
    assert meta["probabilities"] is None  # skl2onnx's scores are not probabilities
    out = OnnxBackend(data).predict(X)
    assert out == {"predict": model.predict(X).tolist()}


def test_input_it_cannot_take_is_a_value_error_naming_the_column(mixed):
    _, X, data = mixed
    backend = OnnxBackend(data)
    with pytest.raises(ValueError, match="missing columns: city"):
        backend.predict(X.drop(columns=["city"]))
    with pytest.raises(ValueError, match="column 'age' must be numeric"):
        backend.predict(X.iloc[:2].assign(age=["old", "young"]))
    with pytest.raises(ValueError, match="column 'city' has missing values"):
        backend.predict(X.iloc[:2].assign(city=[None, "lyon"]))


def test_a_graph_not_made_by_the_converter_is_refused():
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    X = np.arange(20.0).reshape(10, 2).astype(np.float32)
    plain = to_onnx(LinearRegression().fit(X, X[:, 0]), X).SerializeToString()
    with pytest.raises(ValueError, match=r"not made by handoff_agent\.onnx_convert"):
        OnnxBackend(plain)


def test_load_from_a_serving_job_reads_the_graph_and_the_sample(tmp_path):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=100), "b": rng.normal(size=100)})
    X.loc[:4, "b"] = np.nan  # the pushed sample holds NaN in b
    y = (X["a"] > 0).astype(int)
    model = make_pipeline(SimpleImputer(), LogisticRegression()).fit(X, y)
    result, data = run_job(tmp_path, model, X, y)
    assert result["converted"], result["reason"]
    onnx_file = tmp_path / "graph.onnx"
    onnx_file.write_bytes(data)
    bundle = tmp_path / "bundle.tar"
    bundle.write_bytes(bundle_of(model, X, y))

    backend = OnnxBackend.load({"bundle": str(bundle), "onnx": str(onnx_file)})
    assert backend.manifest["serialization"] == "skops"
    # the sample holds NaN in b; the conversion found the imputing graph takes NaN in a too
    assert backend.nan_columns() == ["a", "b"]
    out = backend.predict(X.iloc[:5])
    assert out["predict"] == model.predict(X.iloc[:5]).tolist()
    # what the worker tells the server for the V2 metadata, read off a row of the sample
    assert described(backend) == {
        "classes": [0, 1],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
        ],
    }


def test_choose_names_onnx_only_for_a_converted_graph_with_onnxruntime(monkeypatch):
    converted = {"converted": True, "onnx": "ab" * 32}
    assert onnx_backend.choose(converted) == "onnx"
    assert onnx_backend.choose({"converted": False, "onnx": None}) == "skops"
    assert onnx_backend.choose(None) == "skops"
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a)
    )
    assert onnx_backend.choose(converted) == "skops"


def test_load_falls_back_to_skops_without_a_graph(tmp_path):
    backend_module = pytest.importorskip("handoff_agent.serving.backend")
    from sklearn.linear_model import LogisticRegression

    X = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) % 3})
    model = LogisticRegression().fit(X, (X["a"] > 9).astype(int))
    bundle = tmp_path / "bundle.tar"
    bundle.write_bytes(bundle_of(model, X, (X["a"] > 9).astype(int)))
    from handoff_agent import trust

    job = {"bundle": str(bundle), "trusted_types": trust.effective([])}
    backend = OnnxBackend.load(job)
    assert isinstance(backend, backend_module.SkopsBackend) and backend.name == "skops"
