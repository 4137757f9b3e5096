"""Every push gets every check, a verdict and reports, from a real agent and real workers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from support import push_model, wait_checked

ALL = ["loads", "smoke", "schema", "performance", "latency", "fairness", "explainability", "drift"]


@pytest.fixture(scope="module")
def clf_data():
    X, y = make_classification(n_samples=1600, n_features=6, n_informative=4, random_state=0)
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    X["gender"] = np.random.default_rng(0).integers(0, 2, len(X))
    return X[:800], y[:800], X[800:], y[800:]


def test_classification_push_gets_every_check_a_verdict_and_reports(shared_agent, clf_data):
    Xtr, ytr, Xte, yte = clf_data
    model = LogisticRegression(max_iter=500).fit(Xtr, ytr)
    v = push_model(shared_agent, model, "clf", X=Xte, y=yte, sensitive=["gender"], reference=Xtr)
    body = wait_checked(shared_agent, "clf", v.number)
    assert [c["name"] for c in body["checks"]] == ALL
    assert all(c["status"] in ("pass", "warn") for c in body["checks"]), body["checks"]
    assert body["verdict"]["verdict"] in ("pass", "warn")
    assert body["reports"] == ["html", "json", "md"]
    fairness = next(c for c in body["checks"] if c["name"] == "fairness")
    assert "gender.dp_diff" in fairness["message"]
    status, report = shared_agent.request(
        "GET", f"/api/v1/models/clf/versions/{v.number}/report?format=json"
    )
    assert status == 200 and report["verdict"] == body["verdict"]


def test_regression_push(shared_agent):
    X, y = make_regression(n_samples=600, n_features=4, noise=5, random_state=0)
    X = pd.DataFrame(X, columns=list("abcd"))
    X["region"] = np.arange(len(X)) % 3
    v = push_model(shared_agent, Ridge().fit(X, y), "reg", X=X, y=y, sensitive=["region"])
    body = wait_checked(shared_agent, "reg", v.number)
    perf = next(c for c in body["checks"] if c["name"] == "performance")
    assert perf["result"]["metrics"]["task"] == "regression"
    assert {"r2", "mae", "rmse"} <= set(perf["result"]["metrics"])
    assert next(c for c in body["checks"] if c["name"] == "drift")["status"] == "skip"
    assert body["reports"] == ["html", "json", "md"]


def test_worse_version_fails_the_champion_gate_and_better_passes(shared_agent, clf_data):
    Xtr, ytr, Xte, yte = clf_data
    good = RandomForestClassifier(n_estimators=50, random_state=0).fit(Xtr, ytr)
    v1 = push_model(shared_agent, good, "champ", X=Xte, y=yte)
    assert wait_checked(shared_agent, "champ", v1.number)["status"] in ("passed", "warned")

    worse = DummyClassifier(strategy="most_frequent").fit(Xtr, ytr)
    v2 = push_model(shared_agent, worse, "champ", X=Xte, y=yte)
    body = wait_checked(shared_agent, "champ", v2.number)
    assert body["status"] == "failed"
    reason = body["verdict"]["reasons"][0]
    assert reason.startswith("performance:")
    assert "roc_auc" in reason and "delta -" in reason

    better = RandomForestClassifier(n_estimators=200, random_state=1).fit(Xtr, ytr)
    v3 = push_model(shared_agent, better, "champ", X=Xte, y=yte)
    body = wait_checked(shared_agent, "champ", v3.number)
    perf = next(c for c in body["checks"] if c["name"] == "performance")
    assert perf["status"] == "pass", perf["message"]
    assert "champion" in perf["message"]


def test_a_gate_override_that_fits_no_setting_is_an_error_not_ignored(shared_agent, clf_data):
    """A typo in --gate would otherwise leave the threshold as it was, unseen."""
    Xtr, ytr, Xte, yte = clf_data
    model = LogisticRegression(max_iter=500).fit(Xtr, ytr)
    said = {}
    for gate in ({"fairness.max_dp_dif": 0.2}, {"fairness.max_dp_diff": "lenient"}):
        v = push_model(shared_agent, model, "typo", X=Xte, y=yte, sensitive=["gender"], gate=gate)
        body = wait_checked(shared_agent, "typo", v.number)
        fairness = next(c for c in body["checks"] if c["name"] == "fairness")
        assert fairness["status"] == "error" and body["status"] == "failed"
        said[next(iter(gate))] = fairness["message"]
    assert said == {
        "fairness.max_dp_dif": "fairness has no setting 'max_dp_dif' (from --gate or the "
        "agent's thresholds). Its settings: max_dp_diff, max_eo_diff, max_accuracy_diff, "
        "max_error_ratio, min_group_size, plots.",
        "fairness.max_dp_diff": "fairness.max_dp_diff must be a number, not 'lenient' (from "
        "--gate or the agent's thresholds).",
    }


def test_gate_override_per_push_is_applied(shared_agent, clf_data):
    Xtr, ytr, Xte, yte = clf_data
    model = LogisticRegression(max_iter=500).fit(Xtr, ytr)
    # An absurdly strict fairness threshold, set for this push only, fails the gate.
    v = push_model(
        shared_agent,
        model,
        "strict",
        X=Xte,
        y=yte,
        sensitive=["gender"],
        gate={"fairness.dp_diff": 0.0, "fairness.eo_diff": 0.0},
    )
    body = wait_checked(shared_agent, "strict", v.number)
    assert next(c for c in body["checks"] if c["name"] == "fairness")["status"] == "fail"
    assert body["status"] == "failed"
    assert body["manifest"]["gate"] == {"fairness.dp_diff": 0.0, "fairness.eo_diff": 0.0}
