"""A monitor alert whose policy action is ``retrain`` (audit ``monitor.retrain_requested`` at
central) runs the model's registered retraining notebook on the analyst's local agent, the
way a changed source does: a real kernel through nbclient, once per alert, and the candidate
it pushes names the alert in its ``triggered_by``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sklearn.linear_model import LogisticRegression
from support import push_model, wait_checked
from watch_support import finished_retrain, frame, retrain_notebook, triggers, watch

sys.path.insert(0, str(Path(__file__).parent / "serving"))
from serving_support import MONITOR_DAILY, POLICY, run_on_a_drifted_day, start_pair

MONITOR = (
    MONITOR_DAILY
    + """
[monitor.actions]
drift = "retrain"
"""
)


def drift_alert(central, model, X, y, tmp: Path) -> dict:
    """Central's monitor fires a drift alert on a drifted day imported as churn's log."""
    body = run_on_a_drifted_day(central, model, X, y, tmp)
    [alert] = [a for a in body["alerts"] if a["kind"] == "drift"]
    assert alert["action"] == "retrain" and alert["outcome"].startswith("retrain requested")
    return alert


def test_a_retrain_alert_runs_the_registered_notebook_once(tmp_path):
    local, central = start_pair(
        tmp_path, policy_text=POLICY + MONITOR, local_args=["--HandoffAgent.retrain_poll=0.5"]
    )
    try:
        # Given churn:1 pushed from the notebook, and its data file watched with a
        # retraining notebook (on schema changes only: the file itself will not change)
        df = frame(400)
        X, y = df[list("abcd")], df["y"]
        model = LogisticRegression().fit(X, y)
        push_model(local, model, "churn", X=X, y=y, reference=X)
        wait_checked(local, "churn", 1)
        data = tmp_path / "data" / "churn.parquet"
        data.parent.mkdir()
        df.to_parquet(data)
        nb = retrain_notebook(tmp_path / "retrain.ipynb")
        w = watch(local, model="churn", source=str(data), on=["schema"], run=str(nb))
        assert w["actions"] == ["alert", "retrain"]

        # When central's monitor fires a drift alert whose policy action is retrain
        alert = drift_alert(central, model, X, y, tmp_path)
        audit = central.sql("SELECT payload FROM audit WHERE action = 'monitor.retrain_requested'")
        assert [json.loads(r["payload"])["alert"] for r in audit] == [alert["id"]]

        # Then the local agent runs the registered notebook, and its candidate names the alert
        run = finished_retrain(local, w["id"])
        assert run["change"] == "monitor_alert" and run["state"] == "done", run["detail"]
        assert run["detail"]["alert"] == alert["id"] and run["detail"]["kind"] == "drift"
        assert run["detail"]["versions"] == [{"model": "churn", "number": 2}]
        body = wait_checked(local, "churn", 2)
        cause = body["manifest"]["provenance"]["triggered_by"]
        assert (cause["trigger"], cause["alert"], cause["change"]) == (
            run["id"],
            alert["id"],
            "monitor_alert",
        )
        assert cause["source"] == str(data) and body["message"] == "retrain: monitor_alert"
        actions = [r["action"] for r in local.sql("SELECT action FROM audit")]
        assert "trigger.retrain" in actions and "trigger.done" in actions

        # and only once: later polls find the same firing alert already handled
        time.sleep(2)  # four more polls at 0.5 s; not a timing assertion
        assert [t["change"] for t in triggers(local, w["id"])] == ["monitor_alert"]
    finally:
        local.stop()
        central.stop()


def test_an_alerts_retrain_cut_short_by_its_agent_runs_once_more_at_the_next_poll():
    """What the poll decides from the alert's triggers: a retrain interrupted before its
    candidate was pushed runs once more (naming it), nothing else runs twice."""
    from handoff_agent.watch.service import _run_again

    def t(tid, state, **detail):
        return {"id": tid, "state": state, "detail": detail}

    assert _run_again([]) is None  # never run
    assert _run_again([t(4, "interrupted", versions=[])]) == 4  # once more, retry_of 4
    pushed = [{"model": "churn", "number": 2}]
    assert _run_again([t(4, "interrupted", versions=pushed)]) is False  # its candidate came
    assert _run_again([t(4, "interrupted"), t(7, "interrupted", retry_of=4)]) is False
    assert _run_again([t(4, "done")]) is False and _run_again([t(4, "failed")]) is False
