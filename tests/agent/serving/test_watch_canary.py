"""A source watched at central pauses or rolls back a canary through the DeploymentService,
and traffic really moves: the model server stops answering with the canary's version."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from serving_support import Client, push_to_central, serving_url, sign, start_pair
from sklearn.linear_model import LogisticRegression
from support import until

ROW = {"a": 0.1, "b": -0.2, "c": 0.3, "d": 0.0}


def _data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    return X, (X["a"] + X["b"] > 0).astype(int)


@pytest.fixture
def canary(tmp_path):
    """Central serving churn:1 in production and churn:2 as a canary."""
    X, y = _data()
    local, central = start_pair(tmp_path)
    try:
        v1 = push_to_central(local, central, LogisticRegression().fit(X, y), "churn", X, y)
        sign(central, "churn", v1, "production")
        v2 = push_to_central(local, central, LogisticRegression(C=0.01).fit(X, y), "churn", X, y)
        sign(central, "churn", v2, "canary")
        yield central, X, v2
    finally:
        local.stop()
        central.stop()


def slots(central) -> dict:
    view = central.request("GET", "/api/v1/models/churn/deployment")[1]
    return {s["slot"]: s for s in view["slots"]}


def test_schema_change_rolls_back_the_canary_and_traffic_moves(canary, tmp_path):
    central, X, v2 = canary
    client = Client(serving_url(central), central.token)
    until(
        lambda: any(
            client.invocations([ROW])[1]["X-Handoff-Model-Version"] == str(v2) for _ in range(20)
        ),
        timeout=120,
        what="canary traffic",
    )
    data = tmp_path / "features.parquet"
    X.to_parquet(data)
    # Central runs no notebooks: a retrain is the analyst's local agent's
    nb = tmp_path / "retrain.ipynb"
    nb.write_text("{}")
    status, body = central.request(
        "POST", "/api/v1/watches", {"model": "churn", "source": str(data), "run": str(nb)}
    )
    assert status == 409 and body["error"]["code"] == "local_only", body
    # A model central does not hold (a typo) is a 404 naming it, to register or to list
    typo = {"model": "chrun", "source": str(data), "on": ["schema"], "actions": ["alert"]}
    for method, path, body in (
        ("POST", "/api/v1/watches", typo),
        ("GET", "/api/v1/watches?model=chrun", None),
    ):
        status, out = central.request(method, path, body)
        assert (status, out["error"]["message"]) == (404, "No model named 'chrun'."), out
    out = central.cli("watch", "chrun", "--agent", "central")
    assert out.returncode == 1 and "No model named 'chrun'" in out.stderr, out.stderr
    status, w = central.request(
        "POST",
        "/api/v1/watches",
        {
            "model": "churn",
            "source": str(data),
            "on": ["schema"],
            "actions": ["alert", "rollback_canary"],
        },
    )
    assert status == 201 and w["last"]["change"] == "first", w
    # When the data's schema changes
    X.assign(e=1.0).to_parquet(data)
    status, out = central.request("POST", f"/api/v1/watches/{w['id']}/check", {})
    # Then the canary is rolled back (its version to stage rollback), with an audit row
    assert status == 200 and out["change"] == "schema", out
    rolled = next(t for t in out["triggers"] if t["action"] == "rollback_canary")
    assert rolled["state"] == "done" and rolled["version"] == v2, rolled
    assert "canary" not in slots(central)
    stage = central.request("GET", f"/api/v1/models/churn/versions/{v2}")[1]["stage"]
    assert stage == "rollback"
    # and the model server answers with production only
    until(
        lambda: (
            {client.invocations([ROW])[1]["X-Handoff-Model-Version"] for _ in range(40)} == {"1"}
        ),
        timeout=60,
        what="traffic back on production",
    )
    actions = {r["action"] for r in central.sql("SELECT action FROM audit")}
    assert {"trigger.rollback_canary", "deploy.clear"} <= actions


@pytest.fixture
def lone_canary(tmp_path):
    """Central serving churn:1 as a canary, with no version in production."""
    X, y = _data()
    local, central = start_pair(tmp_path)
    try:
        v1 = push_to_central(local, central, LogisticRegression().fit(X, y), "churn", X, y)
        sign(central, "churn", v1, "canary")
        yield central, X, v1
    finally:
        local.stop()
        central.stop()


def test_a_canary_serving_alone_is_neither_paused_nor_rolled_back(lone_canary, tmp_path):
    central, X, v1 = lone_canary
    data = tmp_path / "features.parquet"
    X.to_parquet(data)
    body = {"model": "churn", "source": str(data), "on": ["schema"]}
    status, w = central.request(
        "POST", "/api/v1/watches", {**body, "actions": ["pause_canary", "rollback_canary"]}
    )
    assert status == 201, w
    # When the data's schema changes
    X.assign(e=1.0).to_parquet(data)
    status, out = central.request("POST", f"/api/v1/watches/{w['id']}/check", {})
    assert status == 200 and out["change"] == "schema", out
    # Then neither action takes the only serving version offline: both skip, saying why
    pause, rollback = out["triggers"]
    assert pause["state"] == rollback["state"] == "skipped", out
    assert rollback["why"] == pause["why"], out
    assert pause["why"].startswith(f"'churn' has no production version: its canary, churn:{v1}")
    assert slots(central)["canary"]["version"] == v1
    assert central.request("GET", f"/api/v1/models/churn/versions/{v1}")[1]["stage"] == "canary"
