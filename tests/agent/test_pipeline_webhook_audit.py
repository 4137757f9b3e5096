"""The webhook destination against a real receiver; the audit chain against tampering."""

from __future__ import annotations

import pytest
from support import WEBHOOK_SECRET as SECRET
from support import Receiver, RunningAgent, bundle_bytes, start_receiver, until


@pytest.fixture
def receiver():
    server, url = start_receiver(Receiver, "/hook")
    yield url
    server.shutdown()


def webhook_agent(tmp_path, receiver: str, allowed: bool) -> RunningAgent:
    args = [
        "--forward-to",
        "webhook",
        "--HandoffAgent.checks=[]",
        f"--WebhookDestination.url={receiver}",
        f"--WebhookDestination.secret={SECRET}",
    ]
    if allowed:
        args.append(f"--WebhookDestination.allowed_urls=['{receiver}']")
    agent = RunningAgent(tmp_path / "home", tmp_path / "rt", args)
    agent.start()
    return agent


def forward_of(agent, name: str) -> dict:
    return agent.request("GET", f"/api/v1/models/{name}/versions/1")[1]["forwards"][0]


def test_webhook_delivers_signed_json_to_a_real_receiver(tmp_path, receiver):
    agent = webhook_agent(tmp_path, receiver, allowed=True)
    try:
        status, pushed = agent.push_bytes("hooked", bundle_bytes("hooked"))
        assert status == 201
        until(lambda: Receiver.received, timeout=90)
        got = Receiver.received[0]
        assert got["ok"] is True
        assert got["body"]["name"] == "hooked" and got["body"]["digest"] == pushed["digest"]
        # The URL it names serves the bundle, verified, to a token holder
        path = got["body"]["bundle_url"].split(agent.url, 1)[1]
        status, _ = agent.request("GET", path)
        assert status == 200
        until(lambda: forward_of(agent, "hooked")["state"] == "delivered", timeout=90)
        assert forward_of(agent, "hooked")["delivery_id"] == got["id"]
    finally:
        agent.stop()


def test_webhook_off_the_allowlist_is_dead_lettered(tmp_path, receiver):
    agent = webhook_agent(tmp_path, receiver, allowed=False)
    try:
        agent.push_bytes("blocked", bundle_bytes("blocked"))
        until(lambda: forward_of(agent, "blocked")["state"] == "dead", timeout=90)
        assert "allowed_urls" in forward_of(agent, "blocked")["last_error"]
        assert Receiver.received == []
    finally:
        agent.stop()


@pytest.mark.parametrize("tamper", ["change", "delete", "reorder"])
def test_audit_verify_names_the_first_bad_entry(tmp_path, tamper):
    agent = RunningAgent(tmp_path / "home", tmp_path / "rt", ["--HandoffAgent.checks=[]"])
    agent.start()
    for i in range(4):
        agent.push_bytes("audited", bundle_bytes("audited", model=b"m%d" % i))
    agent.stop()
    assert agent.cli("audit", "verify").returncode == 0
    if tamper == "change":
        agent.sql("update audit set actor = 'mallory' where seq = 3")
    elif tamper == "delete":
        agent.sql("delete from audit where seq = 3")
    else:  # swap the contents of rows 3 and 4, keeping their seq numbers
        cols = "actor, action, subject, payload, time, prev_hash, hash"
        a, b = (agent.sql(f"select {cols} from audit where seq = {s}")[0] for s in (3, 4))
        for seq, row in ((3, b), (4, a)):
            agent.sql(
                "update audit set actor = :actor, action = :action, subject = :subject,"
                " payload = :payload, time = :time, prev_hash = :prev_hash, hash = :hash"
                " where seq = :seq",
                seq=seq,
                **row,
            )
    out = agent.cli("audit", "verify")
    assert out.returncode == 1
    assert "BROKEN at entry 3" in out.stdout or "BROKEN at entry 4" in out.stdout
