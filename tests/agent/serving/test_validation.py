"""Entering validated at central, end to end: the ONNX conversion with parity picks the
backend that serves, and the load test of the test slot against production gates the moves
beyond validated. Real agents over HTTP, sandboxed workers, one central for the module.

The policy's p99 limit is set impossibly low (0.01x production's) so that a second version,
compared with a production one, fails its gate every time; a first version has no production
to compare with, and passes on its error rate alone.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from serving_support import (
    POLICY,
    Client,
    central_stage,
    get_bytes,
    push_to_central,
    serving_url,
    sign,
    start_pair,
)
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from support import RunningAgent, push_model, until

pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")
assert RunningAgent  # this module starts agents: conftest runs it on every backend

GATED = (
    POLICY
    + """
[deploy.loadtest]
requests = 40
max_p99_ratio = 0.01
p99_slack_ms = 0
"""
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    y = (X["a"] + X["b"] > 0).astype(int)
    return X, y


@pytest.fixture(scope="module")
def pair(tmp_path_factory, backend):
    local, central = start_pair(
        tmp_path_factory.mktemp("validation"),
        ["--Validation.enabled=True", "--Validation.level_seconds=10"],
        GATED,
    )
    try:
        yield local, central, Client(serving_url(central), central.token)
    finally:
        local.stop()
        central.stop()


def finished(central, name: str, number: int) -> dict:
    path = f"/api/v1/models/{name}/versions/{number}/validation"
    return until(
        lambda: (r := central.request("GET", path))[0] == 200 and r[1]["state"] == "done" and r[1],
        timeout=240,
        what=f"{name}:{number} validated at central",
    )


def test_a_converting_model_serves_on_onnx_with_parity_and_passes_its_load_test(pair, data):
    local, central, client = pair
    X, y = data
    number = push_to_central(local, central, LogisticRegression().fit(X, y), "churn", X, y)
    v = finished(central, "churn", number)

    assert v["backend"] == "onnx", v
    parity = v["parity"]
    assert parity["converted"] is True and parity["reason"] is None
    assert parity["tolerance"] == {"atol": 1e-4, "rtol": 1e-4}
    assert parity["max_abs_diff"] <= 1e-4 and parity["label_agreement"] == 1.0
    assert parity["rows"] == len(X) and parity["onnx"]

    # The load test ran on the test slot at 1, 8 and 32 clients; no production to compare
    lt = v["loadtest"]
    assert lt["verdict"] == "pass", lt
    assert [lv["concurrency"] for lv in lt["candidate"]] == [1, 8, 32]
    for lv in lt["candidate"]:
        assert lv["requests"] == 40 and lv["errors"] == 0 and lv["p50_ms"] > 0
        assert lv["throughput"] > 0 and lv["memory_per_worker"] > 0
    assert lt["production"] is None and lt["notes"] == ["no production to compare with"]

    # The test slot serves on onnxruntime, with the model's answers
    infer = f"/v2/models/churn/versions/{number}/infer"
    rows = X.head(5)
    body = {
        "inputs": [
            {"name": c, "shape": [5], "datatype": "FP64", "data": rows[c].tolist()} for c in X
        ]
    }
    status, headers, answer = client.call("POST", infer, body)
    assert status == 200 and headers["X-Handoff-Slot"] == "test", answer
    predicted = next(o for o in answer["outputs"] if o["name"] == "predict")["data"]
    assert predicted == LogisticRegression().fit(X, y).predict(rows).tolist()
    view = central.request("GET", "/api/v1/models/churn/deployment")[1]
    test_slot = next(s for s in view["slots"] if s["slot"] == "test")
    assert test_slot["backend"] == "onnx"
    assert view["validations"][str(number)]["backend"] == "onnx"

    # The version's detail and its report say so too
    detail = central.request("GET", f"/api/v1/models/churn/versions/{number}")[1]
    assert detail["validation"]["parity"]["converted"] is True
    report = f"/api/v1/models/churn/versions/{number}/report"
    html = until(
        lambda: (r := central.request("GET", report))[0] == 200 and r[1],
        timeout=60,
        what="the report written again",
    )
    assert "Deployment test" in html and "onnx" in html


def test_a_model_that_does_not_convert_serves_on_skops_with_the_reason(pair, data):
    local, central, _client = pair
    X, y = data
    # A type outside the default trust list, trusted by an admin: skl2onnx does not know it
    number = push_model(local, NearestCentroid().fit(X, y), "centroid", X=X, y=y).number
    until(lambda: central_stage(central, "centroid", number) == "needs_trust", what="held")
    types = ["sklearn.neighbors._nearest_centroid.NearestCentroid"]
    # Its monitoring says why no window will close: nothing takes traffic, and why
    monitor = central.request("GET", "/api/v1/models/centroid/monitor")[1]
    assert monitor["traffic"] == {
        "versions": [],
        "why_none": f"No version of centroid takes traffic: centroid:{number} waits for an "
        f"admin to trust the types it names ({types[0]}).",
    }
    assert central.request("POST", "/api/v1/trust", {"types": types})[0] == 201
    v = finished(central, "centroid", number)
    assert v["backend"] == "skops"
    assert v["parity"]["converted"] is False
    assert "cannot convert NearestCentroid" in v["parity"]["reason"], v["parity"]
    assert v["loadtest"]["verdict"] == "pass", str(v["loadtest"])  # str: the whole of it
    view = central.request("GET", "/api/v1/models/centroid/deployment")[1]
    assert next(s for s in view["slots"] if s["slot"] == "test")["backend"] == "skops"
    why = central.request("GET", "/api/v1/models/centroid/monitor")[1]["traffic"]["why_none"]
    assert why.endswith("is in validated; it takes traffic from its canary on."), why
    # A routed trial prediction says which versions serve by number (the test slot's)
    row = {"dataframe_split": {"columns": list("abcd"), "data": [[0.1, 0.2, 0.3, 0.4]]}}
    status, out = central.request("POST", "/api/v1/models/centroid/predict", row)
    assert (status, out["error"]["code"]) == (404, "no_default_version"), out
    assert out["error"]["message"].endswith(f"it serves only by version ({number})."), out


def test_versions_validated_together_each_have_the_test_slot_for_their_load_test(pair, data):
    """The model has one test slot: a version entering validated while another's load test
    runs there waits its turn (it took the slot, and the test failed on 404s, for good)."""
    local, central, _client = pair
    X, y = data
    for c in (1.0, 0.5):  # handed off back to back: the second arrives during the first's test
        push_model(local, LogisticRegression(C=c).fit(X, y), "twins", X=X, y=y)
    for number in (1, 2):
        v = finished(central, "twins", number)
        assert v["loadtest"]["verdict"] == "pass", (number, v["loadtest"], v.get("reason"))
    # And the test slot shows the newest validated version again
    view = central.request("GET", "/api/v1/models/twins/deployment")[1]
    assert [s["version"] for s in view["slots"] if s["slot"] == "test"] == [2], view["slots"]


def test_a_failed_gate_is_reported_and_blocks_promotion(pair, data):
    local, central, _client = pair
    X, y = data
    first = finished(central, "churn", 1)
    assert first["loadtest"]["verdict"] == "pass"
    sign(central, "churn", 1, "production")

    # A second version is load-tested against production 1 in the same run, and fails
    v2 = push_to_central(local, central, LogisticRegression(C=0.1).fit(X, y), "churn", X, y)
    v = finished(central, "churn", v2)
    lt = v["loadtest"]
    assert lt["verdict"] == "fail" and "max_p99_ratio" in lt["failed"], lt
    assert lt["production_version"] == 1
    assert [lv["concurrency"] for lv in lt["production"]] == [1, 8, 32]
    assert lt["comparison"]["1"]["p99_ratio"] > 0.01
    assert "over max_p99_ratio 0.01" in v["reason"]

    # Promotion beyond validated: a 409 in the one error shape, naming the gate
    status, body = central.request(
        "POST", f"/api/v1/models/churn/versions/{v2}/signoffs", {"decision": "approve"}
    )
    assert status == 409, body
    assert body["error"]["code"] == "load_test_failed"
    assert "max_p99_ratio" in body["error"]["message"]
    assert "/validation" in body["error"]["hint"]
    status, body = central.request(
        "POST", f"/api/v1/models/churn/versions/{v2}/transition", {"to": "approved"}
    )
    assert status == 409 and body["error"]["code"] == "load_test_failed", body
    detail = central.request("GET", f"/api/v1/models/churn/versions/{v2}")[1]
    assert detail["stage"] == "validated" and detail["signoffs"] == []

    # An admin may run it again; only a validated version is load-tested
    status, body = central.request("POST", f"/api/v1/models/churn/versions/{v2}/validation", {})
    assert status == 202 and body["state"] == "queued", body
    status, body = central.request("POST", "/api/v1/models/churn/versions/1/validation", {})
    assert status == 409 and body["error"]["code"] == "wrong_stage", body
    assert finished(central, "churn", v2)["loadtest"]["verdict"] == "fail"


def slot_requests(central, name: str) -> dict[str, int]:
    view = central.request("GET", f"/api/v1/models/{name}/deployment")[1]
    return {s["slot"]: s.get("requests") or 0 for s in view["slots"]}


def prediction_log(central, name: str) -> pd.DataFrame:
    status, raw = get_bytes(central, f"/api/v1/models/{name}/predictions")
    assert status == 200, raw[:300]
    return pd.read_parquet(io.BytesIO(raw))


def test_a_load_test_is_nobodys_traffic(pair, data):
    """The load test's requests reach the test slot and production, but neither slot's
    request count (what the guardrails and the deployment view read) nor the prediction log."""
    _local, central, client = pair
    X, _y = data
    v2 = 2
    assert central_stage(central, "churn", v2) == "validated"
    before, log_before = slot_requests(central, "churn"), prediction_log(central, "churn")
    assert not log_before["request_id"].str.startswith("loadtest-").any()

    path = f"/api/v1/models/churn/versions/{v2}/validation"
    assert central.request("POST", path, {})[0] == 202
    v = finished(central, "churn", v2)
    lt = v["loadtest"]
    assert lt["production_version"] == 1
    assert all(lv["requests"] == 40 for lv in lt["candidate"] + lt["production"]), lt

    # Three requests of a user's: counted (so the stats' ticks have run past the load test)
    record = X.head(1).to_dict("records")
    for _ in range(3):
        status, headers, body = client.invocations(record)
        assert status == 200 and headers["X-Handoff-Slot"] == "production", body
    until(
        lambda: slot_requests(central, "churn")["production"] == before["production"] + 3,
        timeout=60,
        what="the user's three requests counted",
    )
    after = slot_requests(central, "churn")
    assert after == {**before, "production": before["production"] + 3}
    log_after = prediction_log(central, "churn")
    assert len(log_after) == len(log_before) + 3
    assert not log_after["request_id"].str.startswith("loadtest-").any()

    # Only an admin's token may mark a request as a load test: a consumer is refused
    out = central.cli("token", "create", "--role", "consumer", "--models", "churn", "--user", "lt")
    assert out.returncode == 0, out.stdout + out.stderr
    app = out.stdout.strip().splitlines()[-1]
    status, _, body = client.invocations(
        record, **{"Authorization": f"token {app}", "X-Handoff-Load-Test": "1"}
    )
    assert status == 403 and body["error"]["code"] == "load_test_not_allowed", body
    status, _, _ = client.invocations(record, **{"Authorization": f"token {app}"})
    assert status == 200


def test_a_frame_with_dates_and_nullable_integers_is_load_tested_and_serves_its_nulls(pair):
    """The shapes a real table has: a datetime column (the pipeline drops it) and an Int64
    column holding pd.NA (the imputer fills it). The load test sends them as served, dates in
    ISO 8601 and NA as null (a Timestamp broke it for good, NA went as the text '<NA>'), and
    serving takes a null where the model does."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    local, central, client = pair
    rng = np.random.default_rng(1)
    tenure = pd.array(rng.integers(0, 60, 300), dtype="Int64")
    tenure[::7] = pd.NA
    X = pd.DataFrame(
        {
            "signup": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 300, 300), "D"),
            "tenure": tenure,
            "charges": rng.normal(50, 10, 300),
        }
    )
    y = (X["charges"] > 50).astype(int)
    numbers = ColumnTransformer([("n", SimpleImputer(), ["tenure", "charges"])])
    model = make_pipeline(numbers, LogisticRegression()).fit(X, y)
    number = push_to_central(local, central, model, "tenancy", X, y)
    v = finished(central, "tenancy", number)
    assert v["loadtest"]["verdict"] == "pass", str(v["loadtest"])  # str: the whole of it
    # A row with no tenure is answered as the model itself answers it
    row = X.iloc[[7]]  # tenure is NA there
    body = {
        "inputs": [
            {"name": "signup", "shape": [1], "datatype": "BYTES", "data": ["2024-03-01"]},
            {"name": "tenure", "shape": [1], "datatype": "INT64", "data": [None]},
            {"name": "charges", "shape": [1], "datatype": "FP64", "data": [row.charges.item()]},
        ]
    }
    status, _, out = client.call("POST", f"/v2/models/tenancy/versions/{number}/infer", body)
    assert status == 200, out
    served = next(o for o in out["outputs"] if o["name"] == "predict")
    assert served["data"] == [int(model.predict(row)[0])], out
