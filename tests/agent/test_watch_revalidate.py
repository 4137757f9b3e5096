"""The revalidate action: a changed source re-runs the checks of the model's version on its
new rows, in the sandboxed check workers, recorded against that version; no new version.
A schema change skips it with why; a revalidate watch without a target is refused."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from s3_support import corrupt_blob
from sklearn.linear_model import LogisticRegression
from support import push_model, until, wait_checked
from test_watch_alerts import events_of
from watch_support import check, frame, push_forest, read_bytes, triggers, watch

from handoff_agent import hostile
from handoff_agent.watch.revalidate import pick_version
from jupyter_handoff.watching import Watches


def _pushed(agent):
    df = frame(400)
    X, y = df[list("abcd")], df["y"]
    v = push_model(agent, LogisticRegression().fit(X, y), "churn", X=X, y=y, reference=X)
    body = wait_checked(agent, "churn", v.number)
    return df, body


def _finished(agent, source_id: int) -> dict:
    def done():
        rows = [t for t in triggers(agent, source_id) if t["action"] == "revalidate"]
        return rows and rows[-1]["state"] in ("done", "failed") and rows[-1]

    return until(done, 240, "the revalidation to finish", every=0.5)


def test_appended_rows_revalidate_the_version_without_a_new_one(agent, tmp_path):
    data = tmp_path / "events.csv"
    # Given a checked version and the file its new data arrives in
    _df, pushed = _pushed(agent)
    frame(100).to_csv(data, index=False)
    w = watch(agent, model="churn", source=str(data), actions=["revalidate"], target="y")
    assert w["actions"] == ["revalidate"] and w["target"] == "y"
    # When rows are appended to it
    frame(300).to_csv(data, index=False)
    out = check(agent, w["id"])
    assert out["change"] == "appended", out
    [started] = out["triggers"]
    assert started["action"] == "revalidate" and started["version"] == 1, started
    # Then the trigger is done, naming the revalidation and its verdict
    trig = _finished(agent, w["id"])
    assert trig["state"] == "done", trig["detail"]
    assert trig["detail"]["revalidation"] == started["revalidation"]
    assert trig["detail"]["verdict"] in ("pass", "warn", "fail") and trig["detail"]["rows"] == 300
    # and the revalidation is recorded against version 1, with each check's result
    status, body = agent.request("GET", "/api/v1/models/churn/versions/1/revalidations")
    assert status == 200, body
    [rv] = body["revalidations"]
    assert (rv["id"], rv["state"], rv["target"]) == (started["revalidation"], "done", "y")
    assert (rv["rows"], rv["trigger_id"], rv["source_id"]) == (300, trig["id"], w["id"])
    names = {c["name"]: c for c in rv["checks"]}
    assert set(names) == {c["name"] for c in pushed["checks"]}
    assert names["loads"]["status"] == "pass"
    perf = names["performance"]
    assert perf["status"] in ("pass", "warn") and perf["result"]["metrics"], perf
    assert rv["verdict"] == trig["detail"]["verdict"]
    # and an SSE event announces it
    seen = events_of(agent, "churn", lambda ev: any(e["type"] == "watch.revalidate" for e in ev))
    event = next(e for e in seen if e["type"] == "watch.revalidate")
    assert (event["revalidation"], event["version"], event["state"]) == (rv["id"], 1, "done")
    assert event["verdict"] == rv["verdict"] and event["change"] == "appended"
    # and the watch list says what the last change set off, as `%mlops watch churn` prints it
    [listed] = agent.request("GET", "/api/v1/watches?model=churn")[1]["watches"]
    last = listed["last_trigger"]
    assert (last["action"], last["state"], last["verdict"]) == ("revalidate", "done", rv["verdict"])
    assert last["revalidation"] == rv["id"] and last["change"] == "appended"
    line = repr(Watches([listed]))
    assert "on change -> revalidate: appended " in line, line
    assert line.endswith(f"; revalidate done: {rv['verdict']}"), line
    # and no new version was made; version 1's own checks stay as they were
    status, listed = agent.request("GET", "/api/v1/models/churn/versions")
    assert [v["number"] for v in listed["versions"]] == [1]
    after = agent.request("GET", "/api/v1/models/churn/versions/1")[1]
    assert after["checks"] == pushed["checks"] and after["status"] == pushed["status"]
    # and the audit trail has the trigger, the start and the done, with the revalidation
    actions = [r["action"] for r in agent.sql("SELECT action FROM audit ORDER BY seq")]
    assert {"trigger.revalidate", "revalidation.start", "trigger.done"} <= set(actions)


def test_production_is_revalidated_else_the_newest_version():
    rows = [
        {"number": 1, "digest": "a", "stage": "production"},
        {"number": 2, "digest": "b", "stage": "candidate"},
    ]
    assert pick_version(rows)["number"] == 1
    assert pick_version([{**r, "stage": "candidate"} for r in rows])["number"] == 2
    assert pick_version([]) is None


def test_schema_change_skips_and_a_missing_target_column_is_refused(agent, tmp_path):
    data = tmp_path / "events.csv"
    df, _ = _pushed(agent)
    # A watch whose target column the rows lack is refused, saying which columns there are
    other = tmp_path / "other.csv"
    frame(50).to_csv(other, index=False)
    body = {"model": "churn", "source": str(other), "actions": ["revalidate"], "target": "label"}
    status, out = agent.request("POST", "/api/v1/watches", body)
    assert status == 400 and out["error"]["code"] == "no_target_column", out
    assert out["error"]["message"] == (
        "The source has no column 'label' (--target); its columns are a, b, c, d, y."
    )
    assert agent.request("GET", "/api/v1/watches?model=churn")[1]["watches"] == []
    # A schema change skips it, with why, and records nothing against the version
    df.to_csv(data, index=False)
    w = watch(agent, model="churn", source=str(data), actions=["revalidate"], target="y")
    df.assign(e=1.5).to_csv(data, index=False)
    out = check(agent, w["id"])
    assert out["change"] == "schema"
    [skipped] = out["triggers"]
    assert skipped["state"] == "skipped" and "schema" in skipped["why"]
    status, body = agent.request("GET", "/api/v1/models/churn/versions/1/revalidations")
    assert status == 200 and body["revalidations"] == []


def test_a_revalidate_watch_without_a_target_is_refused(agent, tmp_path):
    data = tmp_path / "events.csv"
    frame(50).to_csv(data, index=False)
    body = {"model": "churn", "source": str(data), "actions": ["revalidate"]}
    status, out = agent.request("POST", "/api/v1/watches", body)
    assert status == 400, out
    assert "target" in out["error"]["message"] and "--target" in out["error"]["hint"]
    status, out = agent.request("GET", "/api/v1/models/nope/versions/1/revalidations")
    assert status == 404 and out["error"]["message"]


def test_new_rows_of_a_sql_source_revalidate_the_version(agent, postgres):
    import psycopg
    from sqlalchemy.engine import make_url

    url = postgres.database()
    u = make_url(url)
    conn = psycopg.connect(
        host=u.host, user=u.username, password=u.password, dbname=u.database, autocommit=True
    )
    try:
        conn.execute("CREATE TABLE scored (a float8, b float8, c float8, d float8, y int)")
        rows = frame(300).itertuples(index=False)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO scored VALUES (%s, %s, %s, %s, %s)", list(rows)[:200])
        _pushed(agent)
        query = "SELECT a, b, c, d, y FROM scored"
        w = watch(agent, model="churn", source=url, query=query, actions=["revalidate"], target="y")
        with conn.cursor() as cur:
            more = list(frame(300).itertuples(index=False))[200:]
            cur.executemany("INSERT INTO scored VALUES (%s, %s, %s, %s, %s)", more)
        assert check(agent, w["id"])["change"] == "appended"
        trig = _finished(agent, w["id"])
        assert trig["state"] == "done" and trig["detail"]["rows"] == 300, trig["detail"]
        [rv] = agent.request("GET", "/api/v1/models/churn/versions/1/revalidations")[1][
            "revalidations"
        ]
        assert {c["name"]: c["status"] for c in rv["checks"]}["loads"] == "pass"
    finally:
        conn.close()


def _hanging_revalidation(agent, tmp_path) -> tuple[dict, dict]:
    """A version whose model hangs on more than 2500 rows at once (its push checks predict
    2000 at most), and a watched file whose 3000 rows start a revalidation that hangs."""
    df = frame(100)
    X, y = df[list("abcd")], df["y"]
    v = push_model(agent, hostile.BigBatches(limit=2500), "churn", X=X, y=y)
    wait_checked(agent, "churn", v.number)
    data = tmp_path / "events.csv"
    frame(100).to_csv(data, index=False)
    w = watch(agent, model="churn", source=str(data), actions=["revalidate"], target="y")
    frame(3000).to_csv(data, index=False)
    [started] = check(agent, w["id"])["triggers"]
    assert started["state"] == "running", started
    return w, started


def _revalidation(agent, rid: int) -> dict:
    status, body = agent.request("GET", "/api/v1/models/churn/versions/1/revalidations")
    assert status == 200, body
    return next(r for r in body["revalidations"] if r["id"] == rid)


def test_a_revalidation_its_agent_killed_runs_once_more_when_the_agent_starts(
    agent_factory, tmp_path
):
    # Given a revalidation running (its model hangs on the 3000 new rows) when the agent is
    # killed, and rows the model takes in the source by the time it starts again
    agent = agent_factory()
    w, started = _hanging_revalidation(agent, tmp_path)
    assert _revalidation(agent, started["revalidation"])["state"] == "running"
    agent.kill9()
    frame(100).to_csv(tmp_path / "events.csv", index=False)
    # When the agent starts again
    agent.start()
    # Then the revalidation cut short is interrupted, saying why, and runs once more, as a
    # new trigger of the same change: done on the source's rows
    retry = _finished(agent, w["id"])
    assert retry["state"] == "done" and retry["detail"]["rows"] == 100, retry["detail"]
    first, again = triggers(agent, w["id"])
    assert (again["id"], again["detail"]["retry_of"]) == (retry["id"], started["trigger"])
    assert (first["id"], first["state"]) == (started["trigger"], "interrupted")
    error = "the agent running it stopped first; it runs once more"
    assert first["detail"]["error"] == error, first
    cut = _revalidation(agent, started["revalidation"])
    assert (cut["state"], cut["detail"]["error"]) == ("interrupted", error) and cut["finished"]
    rv = _revalidation(agent, retry["detail"]["revalidation"])
    assert (rv["state"], rv["rows"], rv["trigger_id"]) == ("done", 100, retry["id"])
    assert rv["verdict"] in ("pass", "warn", "fail")
    assert agent.cli("audit", "verify").returncode == 0


def test_a_revalidation_past_its_timeout_fails(agent_factory, tmp_path):
    agent = agent_factory("--HandoffAgent.revalidation_timeout=3")
    w, started = _hanging_revalidation(agent, tmp_path)
    trig = _finished(agent, w["id"])
    assert trig["state"] == "failed", trig
    assert trig["detail"]["error"] == "not finished within 3 s"
    rv = _revalidation(agent, started["revalidation"])
    assert (rv["state"], rv["verdict"]) == ("failed", None)
    [listed] = agent.request("GET", "/api/v1/watches?model=churn")[1]["watches"]
    assert "; revalidate failed: not finished within 3 s" in repr(Watches([listed]))


def _revalidate(agent, tmp_path, before_check=lambda: None) -> tuple[dict, dict]:
    """Watch the model's source, append rows, check it: the revalidation and its trigger.
    ``before_check`` runs just before the check that sets the revalidation off."""
    data = tmp_path / "events.csv"
    frame(100).to_csv(data, index=False)
    w = watch(agent, model="churn", source=str(data), actions=["revalidate"], target="y")
    frame(300).to_csv(data, index=False)
    before_check()
    [started] = check(agent, w["id"])["triggers"]
    trig = _finished(agent, w["id"])
    status, body = agent.request("GET", "/api/v1/models/churn/versions/1/revalidations")
    assert status == 200, body
    [rv] = body["revalidations"]
    assert rv["id"] == started["revalidation"]
    return trig, rv


def test_a_revalidation_reads_the_bundle_once_for_all_its_workers(agent_factory, tmp_path):
    agent = agent_factory("--HandoffAgent.workers=2")
    pushed = push_forest(agent)
    size = pushed["size"]
    assert size > 5_000_000, size
    read = []
    trig, rv = _revalidate(agent, tmp_path, lambda: read.append(read_bytes(agent.proc.pid)))
    read = read_bytes(agent.proc.pid) - read[0]
    assert trig["state"] == "done", trig["detail"]
    assert {c["status"] for c in rv["checks"]} <= {"pass", "warn", "fail", "skip"}, rv["checks"]
    # The watch read its reference (PSI bins) from the bundle when it was made, and keeps it;
    # the agent read and hashed the bundle once for both workers that ran the checks.
    assert read < 1.5 * size, (read, size)


def test_a_bundle_damaged_on_disk_fails_each_check_of_a_revalidation_naming_fsck(agent, tmp_path):
    _df, pushed = _pushed(agent)
    corrupt_blob(agent, pushed["digest"])
    _trig, rv = _revalidate(agent, tmp_path)
    assert {c["name"] for c in rv["checks"]} == {c["name"] for c in pushed["checks"]}
    for c in rv["checks"]:
        assert c["status"] == "error", c
        assert "cannot be read" in c["message"] and "jupyter handoff fsck" in c["message"], c


class Stalling(BaseHTTPRequestHandler):
    """An on-call webhook that holds the first watch alert until let go (200 to all)."""

    received: list = []  # the watch alerts: (delivery id, body)
    arrived = threading.Event()
    let_go = threading.Event()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers["Content-Type"] == "application/json":
            event = json.loads(body)
            if event.get("type") == "watch.alert":
                self.received.append((self.headers["X-Handoff-Delivery"], event))
                if len(self.received) == 1:
                    Stalling.arrived.set()
                    Stalling.let_go.wait(60)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_a_change_seen_just_before_a_kill_9_is_acted_on_after_the_restart(agent_factory, tmp_path):
    """The snapshot and the actions it owes are committed together, and the alert's notice
    with its trigger: an agent killed while the alert goes out sends it again when it starts,
    under its delivery id, and its revalidation is carried out (still pending at the kill) or
    run once more (cut short while running): never lost, never left running."""
    Stalling.received = []
    Stalling.arrived.clear(), Stalling.let_go.clear()
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hook.server_port}/on-call"
    agent = agent_factory(
        "--forward-to",
        "webhook",
        f"--WebhookDestination.url={url}",
        "--WebhookDestination.secret=watch-webhook-secret-8Kd3Rw6Tz1",
        f"--WebhookDestination.allowed_urls={json.dumps([url])}",
    )
    try:
        data = tmp_path / "events.csv"
        _pushed(agent)
        frame(100).to_csv(data, index=False)
        actions = ["alert", "revalidate"]
        w = watch(agent, model="churn", source=str(data), actions=actions, target="y")
        # When rows are appended, and the agent is killed while its alert's notice goes out
        # (the notices loop sends it beside the revalidation, which may have started)
        frame(300).to_csv(data, index=False)

        def check_now():
            with contextlib.suppress(OSError):
                agent.request("POST", f"/api/v1/watches/{w['id']}/check", {})

        threading.Thread(target=check_now, daemon=True).start()
        assert Stalling.arrived.wait(60), "the alert's notice never came"
        agent.kill9()
        Stalling.let_go.set()
        left = agent.sql("SELECT action, state FROM triggers ORDER BY id")
        assert left[0] == {"action": "alert", "state": "done"}, left
        assert left[1]["action"] == "revalidate" and left[1]["state"] in ("pending", "running")
        # Then, started again, the revalidation is carried out on the appended rows: at once
        # if it had not started, once more (a new trigger, retry_of the first) if the kill
        # cut it short
        agent.start()
        trig = _finished(agent, w["id"])
        assert trig["state"] == "done" and trig["detail"]["rows"] == 300, trig["detail"]
        assert trig["detail"]["verdict"] in ("pass", "warn", "fail")
        status, body = agent.request("GET", "/api/v1/models/churn/versions/1/revalidations")
        assert status == 200, body
        rv = body["revalidations"][-1]
        assert (rv["state"], rv["trigger_id"], rv["rows"]) == ("done", trig["id"], 300)
        cut_short = left[1]["state"] == "running"
        assert [r["state"] for r in body["revalidations"]] == ["interrupted", "done"][
            not cut_short :
        ]
        if cut_short:
            assert trig["detail"]["retry_of"] == triggers(agent, w["id"])[1]["id"], trig
        # and the alert went out again after the kill, under its one delivery id
        owed = actions + ["revalidate"] * cut_short
        assert [t["action"] for t in triggers(agent, w["id"])] == owed
        until(lambda: len(Stalling.received) >= 2, 60, "the alert's notice sent again")
        assert len({d for d, _ in Stalling.received}) == 1
        assert {b["trigger"] for _, b in Stalling.received} == {triggers(agent, w["id"])[0]["id"]}
        # and the audit trail names what the change owed, then each action, in one chain
        rows = agent.sql("SELECT action FROM audit ORDER BY seq")
        seen = [r["action"] for r in rows if r["action"].startswith(("watch.change", "trigger."))]
        assert seen[:3] == ["watch.change", "trigger.alert", "trigger.revalidate"], seen
        assert agent.cli("audit", "verify").returncode == 0
        # and the source, checked again, is unchanged: nothing is owed twice
        assert check(agent, w["id"])["change"] == "unchanged"
        assert len(triggers(agent, w["id"])) == len(owed)
    finally:
        Stalling.let_go.set()
        hook.shutdown()
