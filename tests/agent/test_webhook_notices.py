"""A webhook notice its receiver refuses for now (a 503, then a 500) is tried again with the
same delivery id until it is taken; a refusal for good (a 400) is not tried again. A review
notice commits with the stage that makes a version wait, so a kill -9 cannot lose it."""

from __future__ import annotations

import json
import threading
from http.server import HTTPServer

import pytest
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
        # Then the notice is sent again, under its delivery id, the same bytes, and taken
        until(lambda: len(Flaky.received) >= 2, timeout=60, what="the retry after the restart")
        assert len({got["id"] for got in Flaky.received}) == 1
        assert len({got["raw"] for got in Flaky.received}) == 1
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
        url = f"{central.url}/api/v1/models/scorer/versions/1"  # its port, before the restart
        assert (status, out["stage"]) == (201, "validated"), out
        # and the webhook is back, and central started again
        hook = HTTPServer(("127.0.0.1", port), Flaky)
        threading.Thread(target=hook.serve_forever, daemon=True).start()
        central.start()
        (entry,) = central.request("GET", "/api/v1/reviews")[1]["reviews"]
        assert (entry["version"], entry["next"], entry["missing"]) == (
            1,
            "approved",
            {"reviewer": 1},
        )
        # Then the reviewers are told it waits for them, once
        until(lambda: Flaky.received, timeout=60, what="the review notice")
        until(lambda: not central.sql("SELECT id FROM notices"), timeout=30, what="the row's end")
        (notice,) = [r["body"] for r in Flaky.received]
        # the queue's entry as it stood (its load-test gate may have moved on since)
        said = {k: v for k, v in notice.items() if k != "blocked"}
        assert said == {
            **{k: v for k, v in entry.items() if k != "blocked"},
            "type": "review",
            "url": url,
        }
    finally:
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
    finally:
        central.stop()
        hook.shutdown()


def _first_attempt_of_a_trust_notice(central) -> None:
    """A version that waits for trust, and its notice's first attempt at the receiver."""
    status, out = deliver(central, envelope("evil", exec_payload("1")))
    assert status == 201 and out["stage"] == "needs_trust", out
    until(lambda: Flaky.received, timeout=30, what="the first attempt")
