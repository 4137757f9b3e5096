"""A policy ``rollback`` action really moves traffic: central serves churn:2 with churn:1
kept as previous; a drifted day of churn:2's traffic, imported with the backfill command,
fires the drift alert, and the previous version serves again. A drifted day of a log whose
version is not known (an import's version 0) fires the alert and rolls back nothing."""

from __future__ import annotations

import http.client
import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
import serving_support
from serving_support import (
    MONITOR_DAILY,
    Client,
    central_stage,
    push_to_central,
    serving_url,
    sign,
    start_pair,
)
from sklearn.linear_model import LogisticRegression
from support import Receiver, RunningAgent, start_receiver, until

assert RunningAgent  # this module starts agents: conftest runs it on every backend
ROW = {"a": 0.5, "b": -1.0, "c": 2.0, "d": 0.0}
MONITOR = (
    MONITOR_DAILY
    + """
[monitor.actions]
drift = "rollback"
"""
)


WEBHOOK_SECRET = "monitor-webhook-secret-7Qm2Lx9Vz4"


class Alerts(Receiver):
    """The alerts webhook: each signed delivery, as received."""

    received: list = []
    secret = WEBHOOK_SECRET


def follow(agent, events: list) -> None:
    """Collect the agent's SSE events for churn in a background thread."""

    def run():
        conn = http.client.HTTPConnection(agent.host, agent.port, timeout=600)
        conn.request(
            "GET", "/api/v1/events?model=churn", headers={"Authorization": f"token {agent.token}"}
        )
        for raw in conn.getresponse():
            line = raw.decode().strip()
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))

    threading.Thread(target=run, daemon=True).start()


def test_a_drift_alert_with_the_rollback_action_moves_traffic(tmp_path):
    # churn:2 goes straight to production (no canary bake: the guardrails' test covers that)
    policy = serving_support.POLICY.replace("[deploy]\n", "[deploy]\npromote_after_bake = false\n")
    assert "promote_after_bake" in policy
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(400, 4)), columns=list("abcd"))
    y = (X["a"] + X["b"] > 0).astype(int)
    hook, hook_url = start_receiver(Alerts, "/alerts")
    webhook = [
        "--forward-to",
        "webhook",
        f"--WebhookDestination.url={hook_url}",
        f"--WebhookDestination.secret={WEBHOOK_SECRET}",
        f"--WebhookDestination.allowed_urls={json.dumps([hook_url])}",
    ]
    # start_pair's default policy is bound at import: pass this one
    local, central = start_pair(tmp_path, webhook, policy_text=policy + MONITOR)
    events: list = []
    try:
        v1 = push_to_central(local, central, LogisticRegression().fit(X, y), "churn", X, y)
        sign(central, "churn", v1, "production")
        model2 = LogisticRegression(C=0.01).fit(X, y)
        v2 = push_to_central(local, central, model2, "churn", X, y)
        sign(central, "churn", v2, "production")
        client = Client(serving_url(central), central.token)
        until(
            lambda: client.invocations([ROW])[1]["X-Handoff-Model-Version"] == str(v2),
            timeout=120,
            what="v2 in production",
        )

        # Given the reference (validation data with predictions) and a drifted day of traffic
        ref = X.assign(prediction=model2.predict(X), score=model2.predict_proba(X)[:, 1], label=y)
        ref.to_parquet(tmp_path / "ref.parquet")
        out = central.cli(
            "monitor", "import", "churn", str(tmp_path / "ref.parquet"), "--reference"
        )
        assert out.returncode == 0, out.stdout + out.stderr
        day = (time.time() // 86400 - 1) * 86400  # yesterday, UTC

        def log_of(start: float, shift: float, **version) -> None:
            rows = pd.DataFrame(rng.normal(shift, 1, size=(300, 4)), columns=list("abcd"))
            path = tmp_path / f"log-{start:.0f}.parquet"
            rows.assign(
                time=start + np.sort(rng.uniform(0, 86400, 300)),
                prediction=model2.predict(rows),
                score=model2.predict_proba(rows)[:, 1],
                **version,
            ).to_parquet(path)
            out = central.cli("monitor", "import", "churn", str(path))
            assert out.returncode == 0, out.stdout + out.stderr

        # Given a drifted day of a log imported without versions (version 0: served who knows
        # where), then a calm one: the drift alert fires, rolls back nothing, and clears
        log_of(day - 2 * 86400, 3.0)
        log_of(day - 86400, 0.0)
        out = central.cli("monitor", "run", "churn", "--now", str(day), "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        run = json.loads(out.stdout)
        fired, cleared = [a for a in run["alerts"] if a["kind"] == "drift"]
        held = (
            "not rolled back: the window measured version 0 (imported: its version unknown), "
            f"not churn:{v2} that serves; notified"
        )
        assert (fired["state"], fired["outcome"], fired["rolled_back"]) == ("firing", held, False)
        assert cleared["state"] == "cleared" and run["rolled_back"] is False, run
        assert central_stage(central, "churn", v2) == "production"
        (audit,) = central.sql(
            "SELECT subject, payload FROM audit WHERE action = 'monitor.rollback_withheld'"
        )
        assert audit["subject"] == "churn"
        assert json.loads(audit["payload"]) == {
            "alert": fired["id"],
            "measured": [0],
            "reason": held,
        }
        listed = central.request("GET", "/api/v1/models/churn/alerts")[1]["alerts"]
        assert [a["outcome"] for a in listed if a["id"] == fired["id"]] == [held]

        # and a drifted day of the log with the version that serves (yesterday: churn:2)
        log_of(day, 3.0, version=v2)

        # When the monitor runs
        follow(central, events)
        time.sleep(0.5)  # the stream is connected
        status, body = central.request("POST", "/api/v1/models/churn/monitor/run", {})
        assert status == 200, body

        # Then the drift alert fired, and its rollback moved traffic back to churn:1
        drift = [a for a in body["alerts"] if a["kind"] == "drift"]
        assert drift and drift[0]["outcome"].startswith(f"rolled back churn:{v2}"), body
        assert body["rolled_back"] is True
        slots = central.request("GET", "/api/v1/models/churn/deployment")[1]["slots"]
        assert {s["slot"]: s["version"] for s in slots}["production"] == v1
        assert central_stage(central, "churn", v2) == "rollback"
        until(
            lambda: client.invocations([ROW])[1]["X-Handoff-Model-Version"] == str(v1),
            timeout=60,
            what="churn:1 serving again",
        )
        served = {client.invocations([ROW])[1]["X-Handoff-Model-Version"] for _ in range(20)}
        assert served == {str(v1)}

        alerts = central.request("GET", "/api/v1/models/churn/alerts?state=firing")[1]["alerts"]
        assert [a["kind"] for a in alerts if a["kind"] == "drift"] == ["drift"]
        series = central.request("GET", "/api/v1/models/churn/monitor?window=daily")[1]
        assert series["windows"][-1]["metrics"]["drift"]["share"] == 1.0
        assert series["firing"] >= 1
        assert series["traffic"]["versions"] == [
            {"slot": "production", "version": v1, "traffic": 100.0}
        ], series["traffic"]
        # The panel's badge (from the models list, no request per model) and its Monitor
        # view (each window's readings against the thresholds the alerts were judged on)
        from handoff_agent.monitor_policy import SEVERITY

        listed = {m["name"]: m for m in central.request("GET", "/api/v1/models")[1]["models"]}
        assert listed["churn"]["open_alerts"] == len(alerts) == series["firing"]
        kinds = [a["kind"] for a in listed["churn"]["firing"]]
        assert sorted(kinds, key=SEVERITY.index) == kinds and "drift" in kinds
        marks = {m["kind"]: m for m in series["windows"][-1]["readings"]}
        assert marks["drift"]["crossed"] is True and marks["drift"]["worse"] == "above"
        assert marks["drift"]["threshold"] == 0.3  # the default max_drift_share
        newest = central.request("GET", "/api/v1/models/churn/monitor?window=daily&limit=1")[1]
        assert newest["windows"] == series["windows"][-1:]
        words = central.request("GET", "/api/v1/meta")[1]["monitor"]
        assert words["alert_kinds"]["drift"] == "input drift" and words["severity"] == list(
            SEVERITY
        )
        assert "open_alerts" not in local.request("GET", "/api/v1/models")[1]["models"][0]
        # The alert went out as an SSE event, a webhook delivery and an audit row
        until(lambda: any(e["type"] == "alert" for e in events), timeout=30, what="SSE alert")
        alert = next(e for e in events if e["type"] == "alert" and e["alert"] == "drift")
        assert alert["state"] == "firing" and alert["action"] == "rollback"
        until(lambda: Alerts.received, timeout=30, what="webhook delivery")
        alerts = [g for g in Alerts.received if g["body"]["type"] == "alert"]
        assert any(g["body"]["alert"] == "drift" and g["ok"] for g in alerts)
        audit = central.sql("SELECT action FROM audit WHERE action LIKE 'monitor.%'")
        assert {"monitor.alert", "monitor.reference", "monitor.import"} <= {
            r["action"] for r in audit
        }
        assert central.cli("audit", "verify").returncode == 0

        # The notebook's view, through the local agent (it relays central's answers)
        from jupyter_handoff.monitor_view import MonitorView

        status, series = local.request("GET", "/api/v1/models/churn/monitor?window=daily")
        assert status == 200 and series["windows"], series
        status, relayed = local.request("GET", "/api/v1/models/churn/alerts")
        assert status == 200 and relayed["alerts"], relayed
        view = MonitorView("churn", series, relayed)
        page = view._repr_html_()
        assert "firing" in view.badge() and "input drift" in page and "data:image/png" in page
        assert "rolled back" in page
    finally:
        local.stop()
        central.stop()
        hook.shutdown()


@pytest.mark.parametrize("bad", ["yesterday", "nan"])
def test_monitor_run_refuses_a_bad_now(bad):
    from handoff_agent.monitor_cli import parse_now

    if bad == "nan":
        assert parse_now("1767225600") == 1767225600.0
        return
    from handoff_agent.errors import BadRequest

    with pytest.raises(BadRequest, match="neither epoch seconds"):
        parse_now(bad)
