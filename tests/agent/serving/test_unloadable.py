"""A production version whose stored bundle went bad: after central restarts, its model
server says so (503 naming the blob and fsck) and the deployment view shows it, instead of
"loading" for ever while it retried the load in the background."""

from __future__ import annotations

import numpy as np
import pandas as pd
from s3_support import corrupt_blob
from serving_support import Client, push_to_central, serving_url, sign, start_pair
from sklearn.linear_model import LogisticRegression
from support import RunningAgent, until

ROW = {"a": 0.5, "b": -1.0, "c": 2.0, "d": 0.0}
assert RunningAgent  # this module starts agents: conftest runs it on every backend


def test_a_production_bundle_gone_bad_is_a_503_naming_it_and_shows_in_the_deployment(
    tmp_path, backend
):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 4)), columns=list("abcd"))
    y = (X["a"] > 0).astype(int)
    local, central = start_pair(tmp_path)
    try:
        number = push_to_central(local, central, LogisticRegression().fit(X, y), "churn", X, y)
        sign(central, "churn", number, "production")
        client = Client(serving_url(central), central.token)
        until(lambda: client.invocations([ROW])[0] == 200, timeout=120, what="churn:1 serving")
        digest = central.request("GET", f"/api/v1/models/churn/versions/{number}")[1]["digest"]
        central.stop()
        corrupt_blob(central, digest)
        central.start()
        client = Client(serving_url(central), central.token)

        def refused():
            status, _, body = client.invocations([ROW])
            return status == 503 and "cannot load" in body["error"]["message"] and body

        body = until(refused, timeout=120, what="the load given up")
        message = body["error"]["message"]
        assert message.startswith(f"churn:{number} cannot load: blob {digest} is corrupt"), body
        assert "jupyter handoff fsck" in message, body
        view = central.request("GET", "/api/v1/models/churn/deployment")[1]
        (slot,) = [s for s in view["slots"] if s["slot"] == "production"]
        assert slot["ready"] is False and digest in (slot["load_error"] or ""), slot
    finally:
        local.stop()
        central.stop()


def test_test_slots_past_the_bound_rest_unloaded_and_say_so(tmp_path, backend):
    """Every validated model's test slot held its workers: an analyst pushing many names
    could fill central's memory. The newest c.Serving.max_test_slots load; an older one
    answers 503 saying why, and loads again once it moves on (here: to production)."""
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(200, 4)), columns=list("abcd"))
    y = (X["b"] > 0).astype(int)
    local, central = start_pair(tmp_path, ["--Serving.max_test_slots=1"])
    try:
        for name in ("older", "newer"):
            push_to_central(local, central, LogisticRegression().fit(X, y), name, X, y)
        client = Client(serving_url(central), central.token)
        one = {
            "inputs": [
                {"name": c, "shape": [1], "datatype": "FP64", "data": [v]} for c, v in ROW.items()
            ]
        }

        def answer(name):
            return client.call("POST", f"/v2/models/{name}/versions/1/infer", one)

        until(lambda: answer("newer")[0] == 200, timeout=120, what="newer:1's test slot")
        status, _, body = answer("older")
        assert status == 503, body
        assert body["error"]["message"] == (
            "older:1's test slot is not loaded: central keeps the 1 newest test slots loaded."
        ), body
        sign(central, "older", 1, "production")
        until(lambda: client.invocations([ROW], model="older")[0] == 200, 120, "older serving")
    finally:
        local.stop()
        central.stop()
