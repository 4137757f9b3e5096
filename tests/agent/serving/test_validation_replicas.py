"""Two central replicas on one PostgreSQL database: whichever of them converts a version to
ONNX, the other serves it on ONNX too, without a restart (it follows the ``validation`` event
the converting replica shares)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from serving_support import POLICY, push_to_central, start_pair
from sklearn.linear_model import LogisticRegression
from support import RunningAgent, until

pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")

VALIDATION = ["--Validation.enabled=True", "--Validation.level_seconds=5"]
LOADTEST = POLICY + "\n[deploy.loadtest]\nrequests = 20\n"


def test_the_other_replica_serves_the_converted_version_on_onnx(tmp_path, backend):
    if backend.postgres is None:
        pytest.skip("replicas share a PostgreSQL database")
    local, a = start_pair(tmp_path, VALIDATION, LOADTEST)
    b = RunningAgent(
        tmp_path / "b",
        tmp_path / "rt-b",
        [x for x in a.args if x != "--HandoffAgent.entry_point_plugins=False"],
        database_url=a.database_url,
        env=a.extra_env,
    )
    b.start()
    try:
        rng = np.random.default_rng(1)
        X = pd.DataFrame(rng.normal(size=(200, 3)), columns=list("abc"))
        y = (X["a"] > 0).astype(int)
        number = push_to_central(local, a, LogisticRegression().fit(X, y), "churn", X, y)

        def test_slot(replica) -> dict:
            view = replica.request("GET", "/api/v1/models/churn/deployment")[1]
            return next((s for s in view.get("slots", []) if s["version"] == number), {})

        until(
            lambda: test_slot(a).get("backend") == "onnx",
            timeout=240,
            what="churn converted and served on onnx",
        )
        # Then the replica that did not convert it follows, on its own workers
        until(
            lambda: test_slot(b).get("backend") == "onnx" and test_slot(b).get("ready"),
            timeout=60,
            what="the other replica serving churn on onnx",
        )
        assert test_slot(b)["worker_pids"] != test_slot(a)["worker_pids"]
    finally:
        for agent in (local, b, a):
            agent.stop()
