"""Every built-in check on the inputs people have: text (a Tfidf pipeline fed strings) and
2-D numpy arrays without column names, plus models that return the wrong number of rows."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from handoff_agent.checks.api import CheckContext
from handoff_agent.checks.drift import DriftCheck
from handoff_agent.checks.explainability import ExplainabilityCheck
from handoff_agent.checks.fairness import FairnessCheck
from handoff_agent.checks.latency import LatencyCheck
from handoff_agent.checks.loads import LoadsCheck
from handoff_agent.checks.performance import PerformanceCheck
from handoff_agent.checks.schema import SchemaCheck
from handoff_agent.checks.smoke import SmokeCheck

CHECKS = [
    LoadsCheck,
    SmokeCheck,
    SchemaCheck,
    PerformanceCheck,
    LatencyCheck,
    FairnessCheck,
    ExplainabilityCheck,
    DriftCheck,
]
FAST = {
    "latency": {"single_row_repeats": 5, "batch_repeats": 1},
    "performance": {"bootstrap": 20},
    "fairness": {"max_dp_diff": 0.5, "max_eo_diff": 0.5},  # random groups: judge, never fail
}

GOOD = ["great", "excellent", "lovely", "superb", "fine", "happy"]
BAD = ["awful", "terrible", "broken", "sad", "poor", "dreadful"]


def reviews(n: int, seed: int) -> tuple[pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    filler = ["the", "movie", "was", "really", "quite", "plot", "acting"]
    texts = [
        " ".join([*rng.choice(filler, rng.integers(3, 9)).tolist(), rng.choice(GOOD if t else BAD)])
        for t in y
    ]
    return pd.Series(texts, name="review"), pd.Series(y, name="label")


def manifest(kind: str, X) -> dict:
    cols = (
        [{"name": str(X.name), "dtype": "object"}]
        if kind == "text"
        else [{"name": str(c), "dtype": str(t)} for c, t in X.dtypes.items()]
    )
    return {"signature": {"columns": cols, "input": kind}, "task": "classification"}


def run_all(model, kind, X, y, ref, sensitive) -> dict:
    out = {}
    for cls in CHECKS:
        check = cls()
        ctx = CheckContext(
            model,
            manifest(kind, X),
            X=X,
            y=y,
            sensitive=sensitive,
            reference_X=ref,
            config=FAST.get(check.name, {}),
            task="classification",
        )
        out[check.name] = check.run(ctx)
    return out


@pytest.fixture(scope="module")
def text_results():
    texts, y = reviews(400, 0)
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(list(texts), y)
    X, y_test = reviews(200, 1)
    ref, _ = reviews(200, 2)
    sensitive = pd.DataFrame({"group": np.where(np.arange(200) % 2, "a", "b")})
    return run_all(model, "text", X, y_test, ref, sensitive)


@pytest.mark.parametrize("name", [c.name for c in CHECKS])
def test_every_check_gives_a_real_result_on_text(text_results, name):
    res = text_results[name]
    assert res.status in ("pass", "warn"), res.message
    assert "Traceback" not in res.message


def test_text_results_say_something_about_the_text(text_results):
    assert text_results["performance"].metrics["accuracy"] > 0.9
    importance = text_results["explainability"].tables["importance"]
    assert [r["feature"] for r in importance] == ["review"]
    assert importance[0]["importance"] > 0.2  # shuffling the texts ruins the model
    assert "text" in text_results["explainability"].message
    features = {r["feature"] for r in text_results["drift"].tables["features"]}
    assert {"review.chars", "review.words", "review.vocabulary"} <= features


def test_text_drift_warns_when_the_vocabulary_changes():
    ref, _ = reviews(200, 2)
    X = pd.Series([f"zork{i} blorp{i} quux{i}" for i in range(200)], name="review")
    ctx = CheckContext(None, manifest("text", X), X=X, reference_X=ref)
    res = DriftCheck().run(ctx)
    assert res.status in ("warn", "fail")
    assert "never seen in the reference" in res.message


@pytest.fixture(scope="module")
def array_results():
    X, y = make_classification(500, n_features=4, random_state=0)
    model = LogisticRegression().fit(X[:300], y[:300])  # fitted on numpy: no feature names
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(4)])
    sensitive = pd.DataFrame({"group": np.where(np.arange(200) % 2, "a", "b")})
    test = frame.iloc[300:].reset_index(drop=True)
    return run_all(model, "array", test, pd.Series(y[300:]), frame.iloc[:300], sensitive)


@pytest.mark.parametrize("name", [c.name for c in CHECKS])
def test_every_check_gives_a_real_result_on_numpy_arrays(array_results, name):
    res = array_results[name]
    assert res.status in ("pass", "warn"), res.message


def test_numpy_model_is_fed_arrays(array_results):
    assert array_results["explainability"].metrics["top_features"][0].startswith("x")
    assert any(k.startswith("pdp_") for k in array_results["explainability"].plots)


class Short:
    """A model that drops the last row of whatever it is given."""

    _estimator_type = "classifier"

    def predict(self, X):
        return np.zeros(max(len(X) - 1, 0), dtype=int)


@pytest.mark.parametrize("cls", [SmokeCheck, LatencyCheck, PerformanceCheck, FairnessCheck])
def test_wrong_number_of_rows_fails_with_a_clear_message(cls):
    X, y = make_classification(100, n_features=3, n_informative=2, n_redundant=0, random_state=0)
    X = pd.DataFrame(X, columns=list("abc"))
    sensitive = pd.DataFrame({"g": ["a", "b"] * 50})
    ctx = CheckContext(Short(), {}, X=X, y=pd.Series(y), sensitive=sensitive)
    res = cls().run(ctx)
    assert res.status == "fail"
    assert "predictions for" in res.message and "expected one per row" in res.message
