"""ONNX conversion with parity: the graph is kept only where it predicts what the model does
on the pushed evaluation sample; anything else is ``converted: false`` with a reason, never an
exception, and a model that raises or hangs is contained by the sandboxed worker.

The parity matrix runs the worker's job in this process (the same code, no sandbox start-up
per case); the end-to-end tests go through ``Sandbox.run_once`` and the blob store."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from onnx_support import bundle_of, run_job

from handoff_agent import hostile, onnx_convert, trust
from handoff_agent.sandbox import Limits, Sandbox
from handoff_agent.store.blobs import open_blob_store

pytest.importorskip("skl2onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tabular():
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=400, n_features=8, n_informative=5, random_state=0)
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(8)]), pd.Series(y)


@pytest.fixture(scope="module")
def mixed():
    rng = np.random.default_rng(0)
    n = 300
    X = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "income": rng.normal(50, 15, n),
            "home city": rng.choice(["paris", "lyon", "nice"], n),  # not an ONNX identifier
            "plan": rng.choice(["a", "b"], n),
        }
    )
    y = ((X["income"] > 50) ^ (X["home city"] == "nice")).astype(int)
    return X, y


def assert_parity(result: dict, data: bytes, X) -> None:
    assert result["ok"] and result["converted"], result["reason"]
    assert result["reason"] == ""
    assert result["rows"] == len(X)
    assert result["tolerance"] == onnx_convert.DEFAULT_TOLERANCE
    assert result["max_abs_diff"] <= 1e-4
    assert data and result["onnx_size"] == len(data)
    import hashlib

    assert result["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", ["logistic", "forest", "forest_regressor"])
def test_sklearn_models_convert_with_parity(tmp_path, tabular, kind):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression

    X, y = tabular
    if kind == "logistic":
        model = LogisticRegression(max_iter=500).fit(X, y)
    elif kind == "forest":
        model = RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y)
    else:
        y = X["f0"] * 3 + X["f1"] ** 2
        model = RandomForestRegressor(n_estimators=20, random_state=0).fit(X, y)
    result, data = run_job(tmp_path, model, X, y)
    assert_parity(result, data, X)
    if kind != "forest_regressor":
        assert result["label_agreement"] == 1.0
    else:
        assert result["label_agreement"] is None


def test_a_model_converted_again_is_the_same_graph(tmp_path, tabular):
    """Validation run again (POST …/validation) converts the model again: skl2onnx's random
    graph name made other bytes each time, so another blob, and the graph it replaced stayed
    in the store as an orphan that fsck called an interrupted upload. The same bytes now."""
    from sklearn.ensemble import RandomForestClassifier

    X, y = tabular
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, second = (run_job(tmp_path / d, model, X, y) for d in "ab")
    assert first[0]["converted"] and first[0]["sha256"] == second[0]["sha256"]
    assert first[1] == second[1]


def test_pipeline_with_scaler_and_one_hot_on_a_dataframe(tmp_path, mixed):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = mixed
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age", "income"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["home city", "plan"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(X, y)
    result, data = run_job(tmp_path, model, X, y)
    assert_parity(result, data, X)
    assert result["label_agreement"] == 1.0

    # The graph is fed one input per column, as its metadata says, and answers an unseen city
    # as the model does (handle_unknown="ignore").
    unseen = X.iloc[:3].assign(**{"home city": "brest"})
    got, got_proba = onnx_convert.run_onnx(data, unseen)
    np.testing.assert_allclose(got_proba, model.predict_proba(unseen), atol=1e-4)
    assert list(got) == list(model.predict(unseen))


@pytest.mark.parametrize(
    "library", ["xgboost", "xgboost-named-columns", "lightgbm", "lightgbm-in-a-pipeline"]
)
def test_boosters_convert_with_parity(tmp_path, tabular, library):
    pytest.importorskip("onnxmltools")
    X, y = tabular
    if library.endswith("named-columns"):  # its booster names its features, not f0, f1…
        X = X.set_axis(["tenure", "monthly charges", "âge", *X.columns[3:][::-1]], axis=1)
    if library.startswith("xgboost"):
        xgb = pytest.importorskip("xgboost")
        model = xgb.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1).fit(X, y)
    else:
        lgb = pytest.importorskip("lightgbm")
        model = lgb.LGBMClassifier(n_estimators=20, num_leaves=8, n_jobs=1, verbose=-1)
        if library.endswith("pipeline"):
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            model = make_pipeline(StandardScaler(), model)
        model.fit(X, y)
    result, data = run_job(tmp_path, model, X, y)
    assert_parity(result, data, X)
    assert result["label_agreement"] == 1.0
    # A booster takes a missing value in any column, and so does its graph: served under
    # ONNX, a NaN the evaluation sample never held is answered, as under skops
    assert _nan_columns(tmp_path, model, X, y, data) == list(X.columns)
    blank = X.iloc[:20].assign(**{X.columns[3]: np.nan})
    labels, got_proba = onnx_convert.run_onnx(data, blank)
    np.testing.assert_allclose(got_proba, model.predict_proba(blank), atol=1e-4)
    assert list(labels) == list(model.predict(blank))


def test_a_graph_takes_nan_only_where_the_model_does(tmp_path, tabular):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X, y = tabular
    plain = LogisticRegression(max_iter=500).fit(X, y)  # refuses NaN anywhere
    result, data = run_job(tmp_path, plain, X, y)
    assert result["converted"] and _nan_columns(tmp_path, plain, X, y, data) == []
    imputed = make_pipeline(  # imputes f0 and f1 only: NaN elsewhere is refused
        ColumnTransformer([("imp", SimpleImputer(), ["f0", "f1"])], remainder="passthrough"),
        LogisticRegression(max_iter=500),
    ).fit(X, y)
    result, data = run_job(tmp_path, imputed, X, y)
    assert result["converted"], result["reason"]
    assert _nan_columns(tmp_path, imputed, X, y, data) == ["f0", "f1"]


def _nan_columns(tmp_path, model, X, y, data: bytes) -> list[str]:
    """The columns the serving backend lets a NaN through to the graph."""
    from onnx_support import bundle_of

    from handoff_agent.serving.onnx_backend import OnnxBackend

    (tmp_path / "g.onnx").write_bytes(data)
    (tmp_path / "b.tar").write_bytes(bundle_of(model, X, y))
    job = {"bundle": str(tmp_path / "b.tar"), "onnx": str(tmp_path / "g.onnx")}
    return OnnxBackend.load(job).nan_columns()


def test_array_input_is_fed_as_a_matrix(tmp_path, tabular):
    from sklearn.linear_model import LogisticRegression

    X, y = tabular
    arr = X.to_numpy()
    model = LogisticRegression(max_iter=500).fit(arr, y)
    result, data = run_job(tmp_path, model, arr, y.to_numpy())
    assert_parity(result, data, X)


def test_text_pipeline_is_refused_with_a_reason(tmp_path):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = ["good movie", "bad movie", "great film, loved it", "awful; hated it"] * 20
    y = [1, 0, 1, 0] * 20
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, y)
    result, data = run_job(tmp_path, model, texts, y)
    assert result["ok"] and not result["converted"]
    assert "text pipelines are served by skops" in result["reason"]
    assert data == b""


def test_a_graph_that_disagrees_is_refused_with_its_figures(tmp_path, tabular, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    X, y = tabular
    model = LogisticRegression(max_iter=500).fit(X, y)
    real = onnx_convert.run_onnx

    def skewed(data, frame):
        labels, proba = real(data, frame)
        return labels, np.clip(proba + 0.01, 0, 1)

    monkeypatch.setattr(onnx_convert, "run_onnx", skewed)
    result, data = run_job(tmp_path, model, X, y)
    assert not result["converted"] and data == b""
    assert "differ from the model's on the evaluation sample" in result["reason"]
    assert 0.009 < result["max_abs_diff"] < 0.011
    assert "atol 0.0001" in result["reason"]


def test_unsupported_and_unloadable_models_are_refused(tmp_path, tabular):
    from sklearn.semi_supervised import LabelSpreading

    X, y = tabular
    # A model skl2onnx has no converter for (its type added to the trust list for the test).
    model = LabelSpreading().fit(X, y)
    name = f"{type(model).__module__}.{type(model).__qualname__}"
    result, _ = run_job(tmp_path, model, X, y, added=[name])
    assert not result["converted"]
    assert "skl2onnx cannot convert LabelSpreading" in result["reason"]
    # The same model, not trusted: nothing is loaded.
    result, _ = run_job(tmp_path, model, X, y)
    assert not result["converted"] and result["reason"].startswith("not loaded:")
    assert name in result["reason"]


def test_pickle_bundles_and_bundles_without_a_sample_are_refused(tmp_path, tabular):
    from sklearn.linear_model import LogisticRegression

    X, y = tabular
    model = LogisticRegression().fit(X, y)
    result, _ = run_job(tmp_path, model, X, y, fmt="pickle")
    assert not result["converted"] and "only skops bundles" in result["reason"]
    result, _ = run_job(tmp_path, model, None)
    assert not result["converted"] and "no evaluation sample" in result["reason"]


# -- end to end: sandboxed worker, blob store -------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox()


def convert(sandbox, blobs, bundle: bytes, added=(), timeout: float = 120.0) -> dict:
    digest = blobs.put_bytes(bundle)
    limits = Limits(memory=4 << 30, processes=64)
    return asyncio.run(
        onnx_convert.convert(
            sandbox,
            blobs,
            digest,
            trusted=trust.effective(added),
            limits=limits,
            timeout=timeout,
        )
    )


@pytest.fixture(params=["files", "s3"])
def blob_store(request, tmp_path):
    """The blob store on either backend: files in a home, or a bucket on a real S3 server."""
    if request.param == "files":
        return open_blob_store("", tmp_path / "home")
    from handoff_agent.store.s3 import S3BlobStore

    server = request.getfixturevalue("s3_server")
    (tmp_path / "tmp").mkdir()
    return S3BlobStore(server.client(), server.new_bucket(), "blobs", tmp_path / "tmp")


def test_sandboxed_conversion_stores_the_graph_content_addressed(blob_store, tabular, sandbox):
    from sklearn.ensemble import RandomForestClassifier

    from handoff_agent.serving.onnx_backend import OnnxBackend

    X, y = tabular
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    blobs = blob_store
    result = convert(sandbox, blobs, bundle_of(model, X, y))
    assert result["converted"], result["reason"]
    assert set(result) == set(onnx_convert.empty_result({}))
    json.dumps(result)
    data = blobs.read_bytes(result["onnx"])  # verified against its digest
    assert len(data) == result["onnx_size"]
    out = OnnxBackend(data).predict(X.iloc[:5])
    assert out["predict"] == model.predict(X.iloc[:5]).tolist()


@pytest.mark.parametrize(
    ("model", "timeout", "reason"),
    [
        (hostile.Raises(), 120, "this model is broken"),
        # The code is 3, unless asyncio's child watcher lost the race to reap it (255).
        (hostile.Exits(), 120, "and no result"),
        (hostile.Hangs(), 8, "did not finish within 8 s"),
    ],
    ids=["raises", "exits", "hangs"],
)
def test_a_misbehaving_model_is_contained(tmp_path, tabular, sandbox, model, timeout, reason):
    X, y = tabular
    blobs = open_blob_store("", tmp_path / "home")
    name = f"handoff_agent.hostile.{type(model).__name__}"
    result = convert(sandbox, blobs, bundle_of(model, X, y), added=[name], timeout=timeout)
    assert result["converted"] is False and result["onnx"] is None
    assert reason in result["reason"]
    assert len(list(blobs.iter_digests())) == 1  # the bundle, and nothing else


def test_without_the_extra_nothing_runs(tmp_path, monkeypatch, sandbox):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real(name, *a),
    )
    blobs = open_blob_store("", tmp_path / "home")
    result = convert(sandbox, blobs, b"never read")
    assert result["converted"] is False
    assert result["reason"].startswith("onnx extra not installed")
    assert "onnxruntime" in result["reason"]


def test_sandbox_mode_is_what_runs_here(sandbox):
    """The containment tests ran under bubblewrap where it is installed."""
    assert sandbox.mode == ("bwrap" if shutil.which("bwrap") else "rlimits")
