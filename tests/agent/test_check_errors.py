"""A check that raises: its summary is one line, its traceback goes to the report's details."""

from __future__ import annotations

import pandas as pd
from sklearn.dummy import DummyClassifier
from support import push_model, wait_checked


def test_a_raising_check_has_a_one_line_summary_and_the_traceback_in_details(agent_factory):
    # Given a "check" whose run() cannot be called (json.loads has no .run): it raises
    agent = agent_factory(
        '--HandoffAgent.checks=["loads", "boom"]', plugins={"check": {"boom": "json:loads"}}
    )
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    v = push_model(agent, DummyClassifier().fit(X, [0, 1, 0, 1]), "m", X=X, y=[0, 1, 0, 1])
    body = wait_checked(agent, "m", v.number)
    boom = next(c for c in body["checks"] if c["name"] == "boom")
    # Then the summary says what was raised, on one line, without frames
    assert boom["status"] == "error"
    assert boom["message"].startswith("The check raised AttributeError: ")
    assert "\n" not in boom["message"] and "Traceback" not in boom["message"]
    assert all("Traceback" not in r for r in body["verdict"]["reasons"])
    # And the traceback is in the details the report shows
    lines = [r["line"] for r in boom["result"]["tables"]["traceback"]]
    assert lines[0].startswith("Traceback") and any('File "' in ln for ln in lines)
    status, html = agent.request("GET", f"/api/v1/models/m/versions/{v.number}/report")
    assert status == 200 and "Traceback" in str(html)
