"""Where each hand-off stands, against a real webhook receiver: ``jupyter handoff outbox``
lists what waits (the error, the next try) and what was refused for good (why, and how to
send it again); a forced forward sends a dead delivery again, and it arrives."""

from __future__ import annotations

import json

import pytest
from agent_support import NO_CHECKS, assert_error
from support import Receiver, bundle_bytes, handoff_cli, start_receiver, until

# What the receiver answers for each model's delivery: 400 is a refusal (dead), 503 a
# receiver that is down for now (retried).
ANSWERS: dict[str, int] = {}


class Picky(Receiver):
    """Answers each delivery as ``ANSWERS`` says for its model."""

    received: list = []
    secret = "s" * 32

    def answer(self, got):
        name = got["body"]["name"]
        status = ANSWERS.get(name, 200)
        error = {"code": "refused", "message": f"{name} is not wanted here"}
        return status, ({"error": error} if status >= 400 else {})


@pytest.fixture
def agent(agent_factory):
    server, hook = start_receiver(Picky, "/hook")
    ANSWERS.clear()
    ANSWERS.update({"bad": 400, "slow": 503})
    yield agent_factory(
        NO_CHECKS,
        "--forward-to",
        "webhook",
        f"--WebhookDestination.url={hook}",
        f"--WebhookDestination.allowed_urls=['{hook}']",
        f"--WebhookDestination.secret={Picky.secret}",
    )
    server.shutdown()


def deliveries(agent, query: str = "") -> list[dict]:
    status, body = agent.request("GET", f"/api/v1/outbox/deliveries{query}")
    assert status == 200, body
    return body["deliveries"]


def states(agent) -> dict[str, str]:
    """Each model's delivery state, once tried."""
    return {d["model"]: d["state"] for d in deliveries(agent) if d["attempts"]}


def test_the_outbox_says_what_waits_what_was_refused_and_a_forward_sends_it_again(agent):
    for name in ("good", "bad", "slow"):
        assert agent.push_bytes(name, bundle_bytes(name))[0] == 201
    expected = {"good": "delivered", "bad": "dead", "slow": "pending"}
    until(lambda: states(agent) == expected, timeout=60, what="each delivery tried")

    out = handoff_cli(agent.env, "outbox")
    assert out.returncode == 0, out.stdout + out.stderr
    bad, slow, hint = out.stdout.strip().splitlines()
    assert bad == "bad:1 -> webhook  dead after 1 attempt: 400 refused: bad is not wanted here"
    assert slow.startswith("slow:1 -> webhook  pending after "), slow
    assert ", next try " in slow and slow.endswith(": 503 refused: slow is not wanted here")
    assert hint.startswith("Send a dead one again once its cause is fixed: `%mlops forward")
    every = handoff_cli(agent.env, "outbox", "--all").stdout
    assert "good:1 -> webhook  delivered 20" in every
    wrong = handoff_cli(agent.env, "outbox", "churn")
    assert wrong.returncode == 2
    assert wrong.stderr.splitlines()[0] == "jupyter handoff outbox takes no arguments."
    # The agent's status says so, in the shell and in the notebook
    line = "Deliveries: 1 refused, 1 waiting (`jupyter handoff outbox` says why)"
    assert handoff_cli(agent.env, "status").stdout.strip().endswith(line)

    # A page at a time, and only the states asked for
    assert [d["model"] for d in deliveries(agent, "?state=dead")] == ["bad"]
    status, first = agent.request("GET", "/api/v1/outbox/deliveries?limit=1")
    assert status == 200 and [d["model"] for d in first["deliveries"]] == ["good"]
    rest = deliveries(agent, f"?after={first['next']}")
    assert [d["model"] for d in rest] == ["bad", "slow"]
    for bad_query in ("state=lost", "state=", "limit=0", "after=x"):
        status, body = agent.request("GET", f"/api/v1/outbox/deliveries?{bad_query}")
        assert_error(status, body, 400, "bad_request")

    # The notebook's history says it never arrived, and why; once the receiver takes it, the
    # notebook's forward sends the dead one again: it arrives
    history, status = in_a_notebook(agent, "%mlops history bad", "%mlops agent status")
    assert "[webhook: dead (400 refused: bad is not wanted here)]" in history, history
    assert status.endswith(line), status
    ANSWERS["bad"] = 200
    said = in_a_notebook(agent, "%mlops forward bad:1 --to webhook")[0]
    assert said == "bad:1 is queued for webhook; `%mlops show bad:1` follows its delivery."
    path = "/api/v1/models/bad/versions/1/forward"
    until(lambda: states(agent).get("bad") == "delivered", timeout=60, what="sent again")
    status, again = agent.request("POST", path, body={"to": "webhook"})
    assert (status, again["queued"]) == (202, False)  # delivered: nothing to send again
    audit = "select payload from audit where action = 'forward.queue' and subject = 'bad:1'"
    assert [json.loads(r["payload"])["again"] for r in agent.sql(audit)] == [False, True]


def in_a_notebook(agent, *cells: str) -> list[str]:
    """What each cell prints or shows as text, run in a real kernel that talks to ``agent``."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    setup = (
        f"import os\nos.environ['JUPYTER_RUNTIME_DIR'] = {str(agent.runtime_dir)!r}\n"
        "%load_ext jupyter_handoff"
    )
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (setup, *cells)]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return [
        "".join(o.get("text") or o.get("data", {}).get("text/plain", "") for o in c.outputs).strip()
        for c in nb.cells[1:]
    ]
