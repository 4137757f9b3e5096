"""The push widget and the history show a badge while the model has firing monitor alerts at
central: a local agent and a central one (real processes, real HTTP); the alert is a drift
alert fired by central's monitor on a prediction log imported from elsewhere. Asserted on
the widget's traits and on the text they render."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from support import wait_checked

from jupyter_handoff import api
from jupyter_handoff.monitor_view import alert_line

sys.path.insert(0, str(Path(__file__).parents[1] / "agent" / "serving"))
from serving_support import MONITOR_DAILY, POLICY, import_day, run_on_a_drifted_day, start_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory, backend):
    tmp = tmp_path_factory.mktemp("alerts")
    local, central = start_pair(tmp, policy_text=POLICY + MONITOR_DAILY)
    yield local, central
    local.stop()
    central.stop()


def fire_drift(central, model, X, y, tmp: Path) -> list[dict]:
    """Central's monitor fires on a drifted day of churn's traffic, imported as its log."""
    body = run_on_a_drifted_day(central, model, X, y, tmp, days_ago=2)  # yesterday: calm
    firing = central.request("GET", "/api/v1/models/churn/alerts?state=firing")[1]["alerts"]
    assert "drift" in {a["kind"] for a in firing}, body
    return firing


def test_push_widget_and_history_show_the_firing_alerts(pair, settings, monkeypatch, tmp_path):
    local, central = pair
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(local.runtime_dir))
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(400, 4)), columns=list("abcd"))
    y = (X["a"] + X["b"] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    # Given a version pushed from the notebook, and no alert at central yet
    api.push(model, "churn", X=X, y=y, message="first")
    wait_checked(local, "churn", 1)
    quiet = api.get("churn", 1).widget(follow=False)
    assert quiet.alerts == [] and "handoff-alerts" not in quiet.header.value
    assert "alert" not in repr(quiet)
    history = api.history("churn")
    assert history.alerts == [] and "firing" not in repr(history)
    assert "handoff-alerts" not in history._repr_html_()

    # When central's monitor fires a drift alert for the model
    firing = fire_drift(central, model, X, y, tmp_path)

    # Then the push widget carries the firing alerts and shows a badge that names them
    widget = api.get("churn", 1).widget(follow=False)
    assert sorted(a["id"] for a in widget.alerts) == sorted(a["id"] for a in firing)
    line = alert_line(widget.alerts)
    assert line.startswith(f"{len(firing)} alert") and "input drift (daily)" in line
    assert "handoff-alerts" in widget.header.value and line in widget.header.value
    assert "%mlops monitor churn" in widget.header.value  # the badge's hover says where to look
    assert f"alerts={len(firing)}" in repr(widget)
    # and so does the history, in its text and its table
    history = api.history("churn")
    assert [a["id"] for a in history.alerts] == [a["id"] for a in widget.alerts]
    assert f"  {line}" in repr(history).splitlines()
    page = history._repr_html_()
    assert "handoff-alerts" in page and line in page

    # Once the alerts clear (the next day's window is back within bounds), the badge is gone
    # (yesterday's window, judged again once its log arrives; a run cannot be told a later
    # now than central's clock, so the calm day is one that has closed)
    calm_day = (time.time() // 86400 - 1) * 86400
    calm = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    import_day(central, model, calm, calm_day, tmp_path / "calm.parquet", rng)
    path = "/api/v1/models/churn/monitor/run"
    status, body = central.request("POST", path, {})
    assert status == 200 and {a["state"] for a in body["alerts"]} == {"cleared"}, body
    again = api.get("churn", 1).widget(follow=False)
    assert again.alerts == [] and "handoff-alerts" not in again.header.value
    assert api.history("churn").alerts == []
