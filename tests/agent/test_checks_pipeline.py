"""Every push gets every check, a verdict and reports, from a real agent and real workers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from agent_support import assert_error
from sklearn.datasets import make_classification, make_regression
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from support import bundle_bytes, manifest_for, push_model, wait_checked

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


SETTINGS = {
    "performance": "primary_metric, max_regression, min_score, min_rows, bootstrap, "
    "confidence, random_state, plots",
    "fairness": "max_dp_diff, max_eo_diff, max_accuracy_diff, max_error_ratio, "
    "min_group_size, plots",
}


@pytest.mark.parametrize(
    ("gate", "says"),
    [
        (
            {"performance.min_accuracy": 0.9},
            "performance has no setting 'min_accuracy' (from --gate). "
            f"Its settings: {SETTINGS['performance']}.",
        ),
        (
            {"fairness.dp_diff": 0.2, "fairness.max_dp_dif": 0.2},
            f"fairness has no setting 'max_dp_dif' (from --gate). Its settings: "
            f"{SETTINGS['fairness']}.",
        ),
        (
            {"fairness.max_dp_diff": "lenient"},
            "fairness.max_dp_diff must be a number, not 'lenient' (from --gate).",
        ),
        (
            {"smoke.check_determinism": "maybe"},
            "smoke.check_determinism must be true or false, not 'maybe' (from --gate).",
        ),
    ],
)
def test_a_gate_override_that_fits_no_setting_is_refused_at_push(shared_agent, gate, says):
    """A typo in --gate would leave the threshold as it was, or fail its check later: the
    push is refused, with the setting named and what its check takes, and nothing stored.
    The model is never loaded: the refusal comes before any check."""
    members = {"model.pkl": b"not a pickle: never loaded"}
    manifest = manifest_for("typo", members, gate=gate)
    status, body = shared_agent.push_bytes(
        "typo", bundle_bytes("typo", members["model.pkl"], manifest)
    )
    err = assert_error(status, body, 400, "bad_gate_override")
    assert err["message"] == says
    assert "--gate" in err["hint"]
    assert shared_agent.request("GET", "/api/v1/models/typo/versions")[0] == 404


def test_a_threshold_of_the_agent_that_fits_no_setting_is_an_error_not_ignored(
    agent_factory, clf_data
):
    """The agent's own thresholds go through the same rule, in the check's worker: the check
    errs and names the setting, instead of passing on its default."""
    agent = agent_factory('--GatePolicy.thresholds={"fairness": {"max_dp_dif": 0.2}}')
    Xtr, ytr, Xte, yte = clf_data
    model = LogisticRegression(max_iter=500).fit(Xtr, ytr)
    v = push_model(agent, model, "typo", X=Xte, y=yte, sensitive=["gender"])
    body = wait_checked(agent, "typo", v.number)
    fairness = next(c for c in body["checks"] if c["name"] == "fairness")
    assert fairness["status"] == "error" and body["status"] == "failed"
    assert fairness["message"] == (
        "fairness has no setting 'max_dp_dif' (from --gate or the agent's thresholds). "
        f"Its settings: {SETTINGS['fairness']}."
    )


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
