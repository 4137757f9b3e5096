"""A watched source's alert reaches people like a monitor alert: an SSE event, an audit row
written with the trigger's row, and a signed delivery to the webhook destination (a real
receiver). An overdue source alerts once, after the period ``overdue`` gives it."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time

import pytest
from support import Receiver, push_model, start_receiver, until
from watch_support import check, frame, push_forest, read_bytes, triggers, watch

from handoff_agent import signing
from handoff_agent.vocabulary import when_text
from handoff_agent.watch.classify import PSI_THRESHOLD

SECRET = "watch-webhook-secret-5Tq9Hz2Lm7"


class OnCall(Receiver):
    """The on-call webhook."""

    received: list = []
    secret = SECRET


@pytest.fixture
def hooked(agent_factory):
    """A local agent whose webhook destination is a real receiver."""
    server, url = start_receiver(OnCall, "/on-call")
    agent = agent_factory(
        "--forward-to",
        "webhook",
        "--HandoffAgent.checks=[]",
        f"--WebhookDestination.url={url}",
        f"--WebhookDestination.secret={SECRET}",
        f"--WebhookDestination.allowed_urls={json.dumps([url])}",
    )
    yield agent
    server.shutdown()


def events_of(agent, model: str, want, timeout: float = 30) -> list[dict]:
    """The agent's SSE events for ``model`` from the start of its history (Last-Event-ID 0),
    read until ``want(events)`` holds."""
    conn = http.client.HTTPConnection(agent.host, agent.port, timeout=timeout)
    conn.request(
        "GET",
        f"/api/v1/events?model={model}",
        headers={"Authorization": f"token {agent.token}", "Last-Event-ID": "0"},
    )
    resp, found = conn.getresponse(), []
    try:
        while not want(found):
            line = resp.fp.readline()
            if not line:
                break
            if line.startswith(b"data: "):
                found.append(json.loads(line[6:]))
    finally:
        conn.close()
    return found


def watches(agent) -> list[dict]:
    return agent.request("GET", "/api/v1/watches?model=churn")[1]["watches"]


def delivered(kind: str) -> list[tuple[dict, dict]]:
    return [(r["headers"], r["body"]) for r in OnCall.received if r["body"]["type"] == kind]


def test_a_changed_source_alert_goes_out_as_event_audit_row_and_webhook(hooked, tmp_path):
    agent = hooked
    data = tmp_path / "events.csv"
    frame(100).to_csv(data, index=False)
    w = watch(agent, model="churn", source=str(data), on=["change"])
    assert w["actions"] == ["alert"] and w["last"]["change"] == "first"
    # When rows are appended to the watched file
    frame(150).to_csv(data, index=False)
    out = check(agent, w["id"])
    assert out["change"] == "appended", out
    [alert] = out["triggers"]
    assert alert["action"] == "alert" and alert["state"] == "done"

    # Then the webhook destination gets one signed delivery naming the model and the change
    until(lambda: delivered("watch.alert"), 30, "the watch alert's webhook delivery")
    [(headers, body)] = delivered("watch.alert")
    raw = next(r["raw"] for r in OnCall.received if r["headers"] is headers)
    assert headers["X-Handoff-Signature"] == signing.sign(
        SECRET, headers["X-Handoff-Delivery"], headers["X-Handoff-Timestamp"], [raw]
    )
    assert (body["model"], body["source"], body["change"]) == ("churn", str(data), "appended")
    assert body["trigger"] == alert["trigger"] and body["fingerprint"] == out["fingerprint"]
    assert body["source_id"] == w["id"] and body["snapshot"] == out["snapshot"]
    # with a sentence for the people it reaches, as a monitor alert's
    assert body["message"] == f"churn: {data} has new rows (appended).", body

    # and an SSE event with the same fields
    seen = events_of(agent, "churn", lambda ev: any(e["type"] == "watch.alert" for e in ev))
    event = next(e for e in seen if e["type"] == "watch.alert")
    assert {k: event[k] for k in ("trigger", "change", "source", "fingerprint")} == {
        k: body[k] for k in ("trigger", "change", "source", "fingerprint")
    }

    # and an audit row naming the model, the source and the trigger, in an intact chain
    rows = agent.sql("SELECT subject, payload FROM audit WHERE action = 'trigger.alert'")
    assert [r["subject"] for r in rows] == [f"source:{w['id']}"]
    payload = json.loads(rows[0]["payload"])
    assert (payload["model"], payload["source"], payload["trigger"]) == (
        "churn",
        str(data),
        alert["trigger"],
    )
    assert payload["change"] == "appended" and payload["state"] == "done"
    assert agent.cli("audit", "verify").returncode == 0

    # An unchanged source sends nothing more
    assert check(agent, w["id"])["change"] == "unchanged"
    assert len(delivered("watch.alert")) == 1
    assert [t["action"] for t in triggers(agent, w["id"])] == ["alert"]


def test_overdue_uses_the_watch_period_and_alerts_once(hooked, tmp_path):
    agent = hooked
    data = tmp_path / "daily.csv"
    frame(50).to_csv(data, index=False)
    day_old = time.time() - 30 * 3600  # last written 30 hours ago
    os.utime(data, (day_old, day_old))
    # A source expected daily with slack: --overdue 26h; another one with --overdue 2d,
    late = watch(agent, model="churn", source=str(data), on=["overdue"], overdue="26h")
    assert late["overdue"] == 26 * 3600
    # the other from the command line
    lenient_args = ("--on", "overdue", "--overdue", "2d")
    other = str(tmp_path / "d*.csv")
    out = subprocess.run(
        [sys.executable, "-m", "handoff_agent", "watch", "churn", "--source", other, *lenient_args],
        env=agent.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    # periods as the user gave them, not in seconds
    assert f"churn <- {other} every 1h overdue after 2d on overdue -> alert: first " in out.stdout
    [lenient] = [w for w in watches(agent) if w["source"] == other]
    # The first fingerprint is the baseline; the next one finds the file 30 h old
    out = check(agent, late["id"])
    assert out["change"] == "overdue" and [t["action"] for t in out["triggers"]] == ["alert"]
    assert check(agent, lenient["id"])["change"] == "unchanged"
    until(lambda: delivered("watch.alert"), 30, "the overdue alert's webhook delivery")
    [(_, body)] = delivered("watch.alert")
    assert body["change"] == "overdue" and body["source"] == str(data)
    assert body["message"] == (
        f"churn: {data} is overdue: no new data for longer than its overdue period (overdue)."
    ), body
    # Still overdue at the next check: recorded, not alerted again
    again = check(agent, late["id"])
    assert again["change"] == "overdue" and again["triggers"] == []
    assert [t["action"] for t in triggers(agent, late["id"])] == ["alert"]
    # Written again (not a change this watch is on), then late again: a new alert
    frame(60).to_csv(data, index=False)
    assert check(agent, late["id"])["triggers"] == []
    os.utime(data, (day_old, day_old))
    assert [t["action"] for t in check(agent, late["id"])["triggers"]] == ["alert"]
    until(lambda: len(delivered("watch.alert")) == 2, 30, "the second overdue alert")


def test_a_source_that_stays_unreadable_alerts_once_after_its_overdue_period(hooked, tmp_path):
    from jupyter_handoff.watching import Watches

    agent = hooked
    data = tmp_path / "daily.parquet"
    frame(50).to_parquet(data)
    w = watch(agent, model="churn", source=str(data), every="1s", overdue="3s", on=["overdue"])
    # When the file is deleted (the export job died)
    data.unlink()
    out = check(agent, w["id"])
    # Then each check says why, not yet alerting: it may be back at the next one
    assert out["error"] == f"No file matches {str(data)!r}.", out
    assert not delivered("watch.alert")
    # Unreadable for longer than its overdue period, one alert goes out (the schedule checks
    # it every second), and the webhook names the error and since when
    until(lambda: delivered("watch.alert"), 30, "the unreadable source's alert")
    [(_, body)] = delivered("watch.alert")
    assert (body["change"], body["error"], body["since"]) == ("error", out["error"], out["since"])
    assert body["source"] == str(data) and body["source_id"] == w["id"]
    assert body["message"] == (
        f"churn: {data} cannot be read since {when_text(out['since'])}: {out['error']}"
    ), body
    time.sleep(3)  # checked about three more times
    assert len(delivered("watch.alert")) == 1
    states = [(t["change"], t["action"], t["state"]) for t in triggers(agent, w["id"])]
    assert states == [("error", "alert", "skipped"), ("error", "alert", "done")]
    # The listings say it is unreadable, since when, and that it alerted
    # (its time to the second, in UTC, as every message shows one), one line in both
    since = when_text(out["since"])
    cli = agent.cli("watch", "churn")
    said = f"on overdue -> alert: error since {since}: {out['error']}; alerted"
    assert said in cli.stdout, cli.stdout
    [row] = watches(agent)
    assert repr(Watches([row])) == cli.stdout.strip()
    # Once it is back, the error is over: the listing shows its fingerprint again
    frame(50).to_parquet(data)
    until(lambda: "error" not in watches(agent)[0], 30, "the source read again")
    assert "error since" not in agent.cli("watch", "churn").stdout


def test_a_watch_reads_its_models_bundle_once_not_at_every_check(agent, tmp_path):
    size = push_forest(agent)["size"]
    data = tmp_path / "events.csv"
    frame(100).to_csv(data, index=False)
    w = watch(agent, model="churn", source=str(data))
    frame(200).to_csv(data, index=False)
    first = check(agent, w["id"])
    frame(300).to_csv(data, index=False)
    before = read_bytes(agent.proc.pid)
    second = check(agent, w["id"])
    read = read_bytes(agent.proc.pid) - before
    # both appended rows' PSI came from the model's reference: read from its bundle once
    assert first["change"] == second["change"] == "appended", second
    assert first["psi"] is not None and second["psi"] is not None, second
    assert read < 0.5 * size, (read, size)


def test_rows_shifted_away_from_the_models_reference_are_drift(agent, tmp_path):
    from sklearn.linear_model import LogisticRegression

    pushed = frame(400)
    X, y = pushed[list("abcd")], pushed["y"]
    push_model(agent, LogisticRegression().fit(X, y), "churn", X=X, y=y, reference=X)
    data = tmp_path / "events.csv"
    frame(300, seed=1).to_csv(data, index=False)
    w = watch(agent, model="churn", source=str(data))
    assert check(agent, w["id"])["psi"] < PSI_THRESHOLD
    frame(300, seed=2, shift=3.0).to_csv(data, index=False)
    out = check(agent, w["id"])
    assert out["change"] == "drift" and out["psi"] > PSI_THRESHOLD, out
