"""A webhook notice its receiver refuses for now (a 503, then a 500) is tried again with the
same delivery id until it is taken; a refusal for good (a 400) is not tried again. A review
notice commits with the stage that makes a version wait, and a monitor alert's with the alert,
so a kill -9 cannot lose them."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from http.server import HTTPServer

import pytest
from serving.serving_support import MONITOR_DAILY
from support import until
from test_pipeline_central import FIRST_SECRET
from test_pipeline_delivery import deliver, envelope
from test_trust import TrustHook, exec_payload, start_hooked_central


class Flaky(TrustHook):
    """The security channel answering each POST with the next status of ``answers`` (200
    after)."""

    answers: list[int] = []
    received: list = []

    def answer(self, got):
        return (self.answers.pop(0) if self.answers else 200), {}


@pytest.mark.parametrize(
    "answers, attempts",
    [([503, 500], 3), ([400], 1)],
    ids=["refused-for-now", "refused-for-good"],
)
def test_a_refused_notice_is_retried_with_its_delivery_id(tmp_path, answers, attempts):
    Flaky.answers, Flaky.received = list(answers), []
    central, hook = start_hooked_central(
        tmp_path, Flaky, "--HandoffAgent.notice_retry_seconds=[0.2, 0.2, 0.2]"
    )
    try:
        # Given a version that waits for an admin's trust: the security channel is told
        status, out = deliver(central, envelope("evil", exec_payload("1")))
        assert status == 201 and out["stage"] == "needs_trust", out
        log = tmp_path / "central.log"
        # Then the agent logs it given up once the last attempt is refused, or taken
        until(
            lambda: (
                len(Flaky.received) >= attempts
                and (
                    not answers[attempts - 1 :]
                    or b"trust notice to webhook failed" in log.read_bytes()
                )
            ),
            timeout=30,
            what="the notice's attempts",
        )
        # and every attempt was the same notice, under one delivery id
        ids = {got["id"] for got in Flaky.received}
        bodies = {got["raw"] for got in Flaky.received}
        assert len(Flaky.received) == attempts and len(ids) == 1 and len(bodies) == 1
        assert json.loads(bodies.pop())["needs_trust"] == ["builtins.exec"]
    finally:
        central.stop()
        hook.shutdown()


def test_a_notice_refused_before_a_kill_9_is_sent_again_after_the_restart(tmp_path, backend):
    """Now stored: the retry of a notice survives its agent (on each metadata backend)."""
    Flaky.answers, Flaky.received = [503], []
    central, hook = start_hooked_central(
        tmp_path, Flaky, "--HandoffAgent.notice_retry_seconds=[4.0, 0.2]"
    )
    try:
        # Given a trust request whose receiver refused it for now
        _first_attempt_of_a_trust_notice(central)
        # When the agent is killed before the retry is due, and started again
        central.kill9()
        assert len(Flaky.received) == 1
        central.start()
        # Then the notice is sent again, under its delivery id, and taken: the same notice,
        # its link naming where central listens now (it came back on another port)
        until(lambda: len(Flaky.received) >= 2, timeout=60, what="the retry after the restart")
        assert len({got["id"] for got in Flaky.received}) == 1
        first, again = (got["body"] for got in Flaky.received)
        assert again["url"] == f"{central.url}/api/v1/models/evil/versions/1"
        assert {**first, "url": again["url"]} == again
        until(lambda: not central.sql("SELECT id FROM notices"), timeout=30, what="the row's end")
        assert len(Flaky.received) == 2
    finally:
        central.stop()
        hook.shutdown()


def test_a_version_acknowledged_as_waiting_before_a_kill_9_is_noticed_once(tmp_path, backend):
    """The first review notice is written in the transaction that makes the version wait
    for sign-off: once central acknowledges that, a kill -9 cannot lose the notice."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    Flaky.answers, Flaky.received = [], []
    policy = f'[intake]\nsecrets = ["{FIRST_SECRET}"]\nrevalidate = false\n'
    central, hook = start_hooked_central(
        tmp_path, Flaky, "--HandoffAgent.notice_retry_seconds=[0.2, 0.2]", policy=policy
    )
    # Given the reviewers' webhook down
    port = hook.server_port
    hook.shutdown()
    hook.server_close()
    try:
        # When a version arrives and is validated (central takes the sender's verdict), so it
        # waits for a reviewer's sign-off, and central is killed the moment it says so
        model = sio.dumps(LogisticRegression().fit([[0.0], [1.0]], [0, 1]))
        status, out = deliver(central, envelope("scorer", model))
        central.kill9()
        assert (status, out["stage"]) == (201, "validated"), out
        # and the webhook is back, and central started again on another port (its old one
        # taken meanwhile)
        hook = HTTPServer(("127.0.0.1", port), Flaky)
        threading.Thread(target=hook.serve_forever, daemon=True).start()
        old = central.url
        with socket.create_server((central.host, central.port)):
            central.start()
        assert central.url != old
        (entry,) = central.request("GET", "/api/v1/reviews")[1]["reviews"]
        assert (entry["version"], entry["next"], entry["missing"]) == (
            1,
            "approved",
            {"reviewer": 1},
        )
        # Then the reviewers are told it waits for them, once, with a link to central as it
        # is now, not to where it was when the version came to wait
        until(lambda: Flaky.received, timeout=60, what="the review notice")
        until(lambda: not central.sql("SELECT id FROM notices"), timeout=30, what="the row's end")
        (notice,) = [r["body"] for r in Flaky.received]
        # the queue's entry as it stood (its load-test gate may have moved on since)
        said = {k: v for k, v in notice.items() if k != "blocked"}
        assert said == {
            **{k: v for k, v in entry.items() if k != "blocked"},
            "type": "review",
            "url": f"{central.url}/api/v1/models/scorer/versions/1",
        }
    finally:
        central.stop()
        hook.shutdown()


class Stalling(TrustHook):
    """An on-call channel that holds each POST until ``released`` (the agent's attempt times
    out first), then takes it."""

    received: list = []
    released = threading.Event()

    def answer(self, got):
        self.released.wait(60)
        return 200, {}


def test_alerts_committed_before_a_kill_9_are_each_noticed_after_the_restart(tmp_path, backend):
    """Each alert's notice is written in the alert's transaction: one alert's notice held up
    at its receiver cannot keep the next ones from being stored before a kill -9."""
    import numpy as np
    import pandas as pd

    Stalling.received = []
    Stalling.released.clear()
    central, hook = start_hooked_central(
        tmp_path, Stalling, "--HandoffAgent.notice_retry_seconds=[0.2]", policy=MONITOR_DAILY
    )
    try:
        # Given churn's reference, and yesterday's traffic shifted far from it
        rng = np.random.default_rng(3)
        ref = pd.DataFrame({"a": rng.normal(0, 1, 400)})
        ref.assign(prediction=(ref["a"] > 0).astype(int)).to_parquet(tmp_path / "ref.parquet")
        p = central.cli("monitor", "import", "churn", str(tmp_path / "ref.parquet"), "--reference")
        assert p.returncode == 0, p.stdout + p.stderr
        day = (time.time() // 86400 - 1) * 86400
        log = pd.DataFrame({"a": rng.normal(3, 1, 400)})
        log.assign(prediction=(log["a"] > 0).astype(int), time=day + 200.0 * log.index).to_parquet(
            tmp_path / "log.parquet"
        )
        p = central.cli("monitor", "import", "churn", str(tmp_path / "log.parquet"))
        assert p.returncode == 0, p.stdout + p.stderr

        # When the monitor runs, its alerts fire, and the first notice is held at the
        # receiver while central is killed
        def monitor_run():
            with contextlib.suppress(OSError, http.client.HTTPException):  # killed meanwhile
                central.request("POST", "/api/v1/models/churn/monitor/run", {})

        run = threading.Thread(target=monitor_run)
        run.start()
        until(lambda: Stalling.received, timeout=60, what="the first alert's notice")
        fired = {r["id"] for r in central.sql("SELECT id FROM alerts")}
        assert len(fired) >= 2, fired
        central.kill9()
        run.join(60)
        Stalling.released.set()
        # and started again
        central.start()

        # Then every alert reaches the receiver, each under one delivery id
        def noticed():
            return {r["body"]["id"] for r in Stalling.received} >= fired

        until(noticed, timeout=30, what="every alert's notice")
        until(lambda: not central.sql("SELECT id FROM notices"), timeout=30, what="the rows' end")
        ids = {}
        for got in Stalling.received:
            assert got["ok"] and got["body"]["type"] == "alert", got
            ids.setdefault(got["body"]["id"], set()).add(got["id"])
        assert set(ids) == fired and all(len(d) == 1 for d in ids.values()), ids
    finally:
        Stalling.released.set()
        central.stop()
        hook.shutdown()


def test_a_waiting_notice_is_listed_by_the_api_and_the_outbox_command(tmp_path):
    Flaky.answers, Flaky.received = [503], []
    central, hook = start_hooked_central(
        tmp_path, Flaky, "--HandoffAgent.notice_retry_seconds=[600]"
    )
    try:
        _first_attempt_of_a_trust_notice(central)
        # The refused notice waits, with why and when it is tried next
        rows = until(
            lambda: central.request("GET", "/api/v1/outbox/notices")[1]["notices"],
            timeout=30,
            what="the waiting notice",
        )
        (row,) = rows
        assert (row["kind"], row["destination"], row["attempts"]) == ("trust", "webhook", 1)
        assert "503" in row["last_error"] and row["delivery_id"] == Flaky.received[0]["id"]
        assert "body" not in row
        p = central.cli("outbox", "--agent", "central")
        assert p.returncode == 0, p.stdout + p.stderr
        line = next(ln for ln in p.stdout.splitlines() if "notice" in ln)
        assert line.startswith("trust notice -> webhook  waiting after 1 attempt, next try in ")
        assert "503" in line
        assert "c.WebhookDestination.url is set but" not in central.read_log()  # it is used
    finally:
        central.stop()
        hook.shutdown()


def _first_attempt_of_a_trust_notice(central) -> None:
    """A version that waits for trust, and its notice's first attempt at the receiver."""
    status, out = deliver(central, envelope("evil", exec_payload("1")))
    assert status == 201 and out["stage"] == "needs_trust", out
    until(lambda: Flaky.received, timeout=30, what="the first attempt")


def test_a_webhook_url_without_webhook_in_forward_to_is_warned_of_at_start(agent_factory):
    """An operator who sets c.WebhookDestination but not forward_to got silence: ``serve``
    now says in one line that nothing will be sent, and what to add."""
    url = "http://127.0.0.1:9/hook?token=not-for-the-log"
    agent = agent_factory(
        f"--WebhookDestination.url={url}",
        "--WebhookDestination.secret=watch-webhook-secret-8Kd3Rw6Tz1",
        f"--WebhookDestination.allowed_urls={json.dumps([url])}",
    )
    log = agent.read_log()
    [line] = [ln for ln in log.splitlines() if "c.WebhookDestination.url is set" in ln]
    assert "'webhook' is not in c.HandoffAgent.forward_to (['central'])" in line, line
    assert "no webhook notice or delivery will be sent" in line, line
    assert "c.HandoffAgent.forward_to = ['central', 'webhook']" in line, line
    assert "--forward-to central --forward-to webhook" in line, line
    assert "not-for-the-log" not in log  # a chat's URL may hold its token
