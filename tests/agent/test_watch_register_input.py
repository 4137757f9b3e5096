"""What ``POST /api/v1/watches`` takes: a path the system can look up, numbers a retrain
can run with (no NaN or Infinity as its timeout or in its parameters, which the store, the
panel's JSON and the injected parameter cell cannot hold), each action once, and a source
watched again after a remove starting from a new baseline."""

from __future__ import annotations

import pytest
from watch_support import check, frame, triggers, watch


@pytest.mark.parametrize(
    "extra, says",
    [
        ({"timeout": float("nan")}, "timeout must be a positive number of seconds."),
        ({"timeout": float("inf")}, "timeout must be a positive number of seconds."),
        ({"params": {"lr": float("nan")}}, "params may not hold NaN or Infinity."),
        ({"params": {"epochs": [1, float("-inf")]}}, "params may not hold NaN or Infinity."),
        # each parameter becomes a variable of the notebook: every retrain would fail on it
        (
            {"params": {"n-rows": 5}},
            "params 'n-rows' is no Python variable name; the retrain sets each parameter as a "
            "variable in the notebook.",
        ),
        # a web address is no database: it needs no query, it is not read at all
        (
            {"source": "https://example.com/events.csv"},
            "A https:// source is neither a file here nor a database: a watch reads Parquet or "
            "CSV files on this machine, or a SQL query through a SQLAlchemy URL.",
        ),
        # a path the system refuses to look up (a name past NAME_MAX) is the user's 400
        (
            {"source": "/tmp/" + "a" * 300 + ".csv"},
            f"{'/tmp/' + 'a' * 300 + '.csv'!r} cannot be read: File name too long.",
        ),
    ],
)
def test_a_watch_refuses_what_no_check_or_retrain_can_use(shared_agent, tmp_path, extra, says):
    data = tmp_path / "events.csv"
    frame(50).to_csv(data, index=False)
    body = {"model": "churn", "source": str(data), **extra}
    status, out = shared_agent.request("POST", "/api/v1/watches", body)
    assert status == 400, out
    assert out["error"]["code"] == "bad_request" and out["error"]["message"] == says


def test_a_misspelt_setting_is_refused_naming_the_one_meant(shared_agent, tmp_path):
    """It would leave its default (every hour) unseen. The API's one rule for body keys
    (tests/agent/test_body_fields.py) answers, before the watch's own checks."""
    data = tmp_path / "events.csv"
    frame(50).to_csv(data, index=False)
    body = {"model": "churn", "source": str(data), "evry": "1m"}
    status, out = shared_agent.request("POST", "/api/v1/watches", body)
    assert status == 400 and out["error"]["code"] == "unknown_field", out
    assert out["error"]["message"] == (
        "POST /api/v1/watches has no body field 'evry' (did you mean 'every'?)."
    )
    assert out["error"]["hint"] == (
        "Its fields are model, source, query, every, overdue, on, actions, run, params, "
        "timeout, target."
    )


def test_an_action_named_twice_alerts_once_per_change(agent, tmp_path):
    data = tmp_path / "events.csv"
    frame(100).to_csv(data, index=False)
    w = watch(
        agent, model="churn", source=str(data), on=["change", "change"], actions=["alert", "alert"]
    )
    assert w["actions"] == ["alert"] and w["on"] == ["change"]
    frame(150).to_csv(data, index=False)
    assert [t["action"] for t in check(agent, w["id"])["triggers"]] == ["alert"]
    assert [t["action"] for t in triggers(agent, w["id"])] == ["alert"]


def test_a_source_watched_again_after_a_remove_starts_from_a_new_baseline(agent, tmp_path):
    data = tmp_path / "events.csv"
    frame(100).to_csv(data, index=False)
    w = watch(agent, model="churn", source=str(data), on=["change"])
    assert agent.request("DELETE", f"/api/v1/watches/{w['id']}")[0] == 200
    # removed: its history stays readable, but it is neither checked nor removed again
    for method, path in (("DELETE", ""), ("POST", "/check")):
        status, out = agent.request(method, f"/api/v1/watches/{w['id']}{path}")
        assert (status, out["error"]["code"]) == (409, "watch_removed"), out
    assert agent.request("GET", f"/api/v1/watches/{w['id']}")[0] == 200
    # While nobody watches it, the export is rewritten
    frame(100, seed=5).assign(extra=1).to_csv(data, index=False)
    # When it is watched again
    again = watch(agent, model="churn", source=str(data), on=["change"])
    # Then its fingerprint now is the baseline, not a change against the earlier watch's
    assert again["last"]["change"] == "first", again["last"]
    assert again["last"]["triggers"] == []
    assert check(agent, again["id"])["change"] == "unchanged"
    # while settings replaced on a watched source keep its baseline
    frame(150, seed=5).assign(extra=1).to_csv(data, index=False)
    replaced = watch(agent, model="churn", source=str(data), on=["change"], every="30m")
    assert replaced["replaced"] and replaced["last"]["change"] == "appended"
