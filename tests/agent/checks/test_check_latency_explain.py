"""latency and explainability, on small data and small budgets."""

import base64
import time

import pandas as pd
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression

from handoff_agent.checks.api import CheckContext
from handoff_agent.checks.explainability import ExplainabilityCheck
from handoff_agent.checks.latency import LatencyCheck

X, Y = make_classification(400, n_features=4, n_informative=2, n_redundant=0, random_state=0)
X = pd.DataFrame(X, columns=list("abcd"))
FAST = LogisticRegression().fit(X, Y)


class Sleepy:
    """A slow model: sleeps 50 ms per call (far past 5x the champion's p50 even on a loaded
    machine, where a LogisticRegression's single-row predict can take a few ms)."""

    _estimator_type = "classifier"

    def predict(self, X):
        time.sleep(0.05)
        return FAST.predict(X)


def test_latency_reports_figures():
    res = LatencyCheck().run(CheckContext(FAST, {}, X=X), single_row_repeats=20)
    assert res.status == "pass"
    for key in ("p50_ms", "p99_ms", "throughput_rows_per_s", "peak_memory_mb", "serialized_mb"):
        assert res.metrics[key] >= 0
    assert res.metrics["single_row_calls"] == 20


def test_latency_fails_when_much_slower_than_the_champion():
    res = LatencyCheck().run(
        CheckContext(Sleepy(), {}, X=X, champion=FAST), single_row_repeats=10, batch_repeats=1
    )
    assert res.status == "fail"
    assert "slower than the champion" in res.message
    assert res.metrics["p50_ratio"] > 5


def test_explainability_ranks_informative_features_and_plots_them():
    res = ExplainabilityCheck().run(CheckContext(FAST, {}, X=X, y=pd.Series(Y)), max_rows=200)
    assert res.status == "pass"
    assert res.metrics["rows"] == 200
    top = res.metrics["top_features"]
    assert len(top) == 3
    informative = {"a", "b", "c", "d"} - {r["feature"] for r in res.tables["importance"][-2:]}
    assert set(top[:2]) == informative
    assert set(res.plots) == {f"pdp_{f}" for f in top}
    assert base64.b64decode(res.plots[f"pdp_{top[0]}"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_explainability_regression_with_a_categorical_feature():
    Xr, yr = make_regression(300, n_features=3, random_state=0)
    Xr = pd.DataFrame(Xr, columns=["u", "v", "w"])
    Xr["flag"] = (Xr["u"] > 0).astype(int)
    model = RandomForestRegressor(20, random_state=0).fit(Xr, yr)
    res = ExplainabilityCheck().run(
        CheckContext(model, {}, X=Xr, y=pd.Series(yr)), top_features=4, n_repeats=2
    )
    assert res.status == "pass"
    assert len(res.plots) == 4  # including the binary "flag", plotted as categorical


def test_serialized_size_counts_protocol_5_buffers():
    import pickle

    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    from handoff_agent.checks.latency import serialized_size

    X, y = make_classification(n_samples=500, n_features=5, random_state=0)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    assert serialized_size(forest) == len(pickle.dumps(forest, protocol=5))
