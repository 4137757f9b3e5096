"""A verdict central committed is always acted on: when its reports cannot be stored (S3
down) and central is killed meanwhile, the restarted central writes them and moves the
version on from ``received``; no version waits there for good."""

from __future__ import annotations

import urllib.parse

import numpy as np
import pandas as pd
import pytest
from backends import Relay
from s3_support import s3_agent_args
from sklearn.linear_model import LogisticRegression
from support import RunningAgent, push_model, until, wait_checked
from test_outages import central_on_s3_behind_a_relay
from test_trust import start_local

RUNS = "SELECT r.status FROM check_runs r JOIN versions v ON v.id = r.version_id"
VERSION = "SELECT status, stage FROM versions WHERE model = 'churn'"


def test_a_verdict_whose_reports_met_s3_down_and_a_kill_is_concluded_at_restart(tmp_path, backend):
    central, relay = central_on_s3_behind_a_relay(tmp_path, backend, revalidate="true")
    local = start_local(tmp_path, central, "--HandoffAgent.owner_name=alice")
    try:
        # Given a version handed off to central, whose checks central runs again
        rng = np.random.default_rng(0)
        X = pd.DataFrame(rng.normal(size=(300, 3)), columns=list("abc"))
        y = (X["a"] > 0).astype(int)
        v = push_model(local, LogisticRegression().fit(X, y), "churn", X=X, y=y)
        assert wait_checked(local, "churn", v.number)["status"] in ("passed", "warned")
        until(lambda: any(r["status"] not in ("queued", "running") for r in central.sql(RUNS)))
        # When S3 goes away while they finish (their bundle copy is local by then)
        relay.cut()
        until(lambda: central.sql(VERSION)[0]["status"] != "checking", what="central's verdict")
        # the verdict is in, its reports cannot be stored, and the version waits
        assert central.sql(VERSION)[0]["stage"] == "received"
        # and central is killed before S3 comes back
        central.kill9()
        relay.restore()
        central.start()
        # Then the restarted central stores the reports and moves the version on
        path = "/api/v1/models/churn/versions/1"
        until(lambda: central.request("GET", path)[1].get("stage") == "validated", timeout=120)
        assert central.request("GET", path + "/report")[0] == 200
        stages = [s["stage"] for s in central.request("GET", path)[1]["stages"]]
        assert stages == ["received", "validated"]  # once
    finally:
        local.stop()
        central.stop()
        relay.close()


def test_a_local_verdict_whose_reports_met_s3_down_and_a_kill_gets_them_at_restart(
    tmp_path, backend
):
    if backend.s3 is None:
        pytest.skip("the outage is S3's")
    relay = Relay(urllib.parse.urlsplit(backend.s3.endpoint).port)
    args, env = s3_agent_args(backend.s3, backend.s3.new_bucket())
    local = RunningAgent(tmp_path / "local", tmp_path / "rt", [*map(relay.url, args)], env=env)
    local.start()
    try:
        # Given a push whose checks run
        rng = np.random.default_rng(1)
        X = pd.DataFrame(rng.normal(size=(300, 3)), columns=list("abc"))
        y = (X["a"] > 0).astype(int)
        push_model(local, LogisticRegression().fit(X, y), "churn", X=X, y=y)
        until(lambda: any(r["status"] not in ("queued", "running") for r in local.sql(RUNS)))
        # When S3 goes away while they finish, and the agent is killed before it is back
        relay.cut()
        until(lambda: local.sql(VERSION)[0]["status"] != "checking", what="the verdict")
        assert local.sql("SELECT count(*) AS n FROM reports") == [{"n": 0}]
        local.kill9()
        relay.restore()
        local.start()
        # Then the restarted agent writes the version's report
        path = "/api/v1/models/churn/versions/1/report"
        until(lambda: local.request("GET", path)[0] == 200, timeout=120, what="the report")
    finally:
        local.stop()
        relay.close()
