"""``GET /api/v1/ready`` on a central that serves says whether its model server is ready, as
``/v2/health/ready`` does: a load balancer or a Kubernetes readiness probe in front of central
sends it nothing (503) while a version in a slot is still loading."""

from __future__ import annotations

import numpy as np
import pandas as pd
from serving_support import Client, serving_url, start_pair
from sklearn.linear_model import LogisticRegression
from support import RunningAgent, push_model, until

assert RunningAgent  # this module starts agents: conftest runs it on every backend


def test_a_central_whose_model_server_still_loads_is_not_ready(tmp_path, backend):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 4)), columns=list("abcd"))
    y = (X["a"] > 0).astype(int)
    # Given a central whose serving workers can never load in time (they retry for ever)
    local, central = start_pair(tmp_path, ["--Serving.load_timeout=0.05"])
    try:
        status, body = central.request("GET", "/api/v1/ready", token=False)
        assert status == 200 and body["model_server"] == "ready", body  # nothing to load yet
        # When a pushed version reaches its test slot at central
        push_model(local, LogisticRegression().fit(X, y), "churn", X=X, y=y)

        def refused():
            status, headers, body = central.request_full("GET", "/api/v1/ready", token=False)
            return status == 503 and (headers, body)

        headers, body = until(refused, timeout=120, what="central not ready")
        # then its readiness is a 503 in the one error shape, naming what still loads
        assert set(body) == {"error"}, body
        assert body["error"]["code"] == "model_server_not_ready", body
        assert body["error"]["message"] == (
            "The model server is not ready: churn:1 is still loading."
        ), body
        assert int(headers["Retry-After"]) > 0
        # and the model server's own probe agrees, while central stays alive
        client = Client(serving_url(central), central.token)
        assert client.call("GET", "/v2/health/ready", token=False)[0] == 503
        assert central.request("GET", "/api/v1/health", token=False)[0] == 200
    finally:
        local.stop()
        central.stop()
