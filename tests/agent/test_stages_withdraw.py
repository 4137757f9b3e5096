"""A reviewer takes a sign-off back while the version still waits for more: it no longer
counts, the queue shows it missing again, the audit chain and the dossier keep the story.
One real central (two reviewers for approved) and one local agent for the whole module."""

from __future__ import annotations

import json
import threading
import zipfile
from http.server import HTTPServer

import numpy as np
import pandas as pd
import pytest
from agent_support import assert_error
from sklearn.linear_model import LogisticRegression
from support import WEBHOOK_SECRET as HOOK_SECRET
from support import (
    Receiver,
    RunningAgent,
    forwarding_args,
    handoff_cli,
    push_model,
    start_receiver,
    until,
    wait_checked,
)

SECRET = "first-secret-3kT9qLm2VxZp7RwY8nB4"
POLICY = f"""
[intake]
trusted_types = []
accept_pickle = false

[intake.senders]
alice = "{SECRET}"

[stages.approved]
reviewer = 2
"""
SIGN = "/api/v1/models/churn/versions/1/signoffs"


class Hook(Receiver):
    """The reviewers' webhook (their chat): each signed POST central sends, verified."""

    received: list = []


def review_notices(version: int = 1) -> list[dict]:
    said = [r for r in Hook.received if r["body"]["type"] == "review"]
    return [r for r in said if r["body"]["version"] == version]


@pytest.fixture(scope="module")
def site(tmp_path_factory, backend):
    """churn:1 validated at central, waiting for two reviewers; bob, carol and dave review,
    adam is an admin."""
    tmp = tmp_path_factory.mktemp("withdraw")
    (tmp / "policy.toml").write_text(POLICY)
    hook, url = start_receiver(Hook, "/reviewers")
    args = ["--role", "central", "--policy", str(tmp / "policy.toml"), "--forward-to", "webhook"]
    args += [f"--WebhookDestination.{k}={v}" for k, v in (("url", url), ("secret", HOOK_SECRET))]
    args.append(f"--WebhookDestination.allowed_urls={json.dumps([url])}")
    central = RunningAgent(tmp / "central", tmp / "rt-central", args)
    central.start()
    local = RunningAgent(
        tmp / "local",
        tmp / "rt-local",
        [
            *forwarding_args(central, SECRET),
            "--HandoffAgent.checks=[]",  # central checks it again
        ],
    )
    local.start()
    out = {"hook": hook}  # the last test stops it and starts another on its port
    try:
        rng = np.random.default_rng(0)
        X = pd.DataFrame(rng.normal(size=(200, 3)), columns=list("abc"))
        y = (X["a"] > 0).astype(int)
        v = push_model(local, LogisticRegression().fit(X, y), "churn", X=X, y=y)
        wait_checked(local, "churn", v.number)
        stage = lambda: central.request("GET", "/api/v1/models/churn/versions/1")[1].get("stage")  # noqa: E731
        until(lambda: stage() == "validated", timeout=120, what="churn:1 validated at central")
        out.update(
            central=central,
            local=local,
            X=X,
            y=y,
            tmp=tmp,
            **{u: central.make_token(u, "reviewer") for u in ("bob", "carol", "dave")},
            adam=central.make_token("adam", "admin"),
        )
        yield out
    finally:
        local.stop()
        central.stop()
        out["hook"].shutdown()


def queue_entry(central) -> dict | None:
    status, body = central.request("GET", "/api/v1/reviews")
    assert status == 200, body
    return next((r for r in body["reviews"] if (r["model"], r["version"]) == ("churn", 1)), None)


def sign(site, user: str, decision: str = "approve", **more):
    return site["central"].request("POST", SIGN, {"decision": decision, **more}, token=site[user])


def cli_as(site, user: str, *args: str):
    central = site["central"]
    env = {**central.env, "HANDOFF_TOKEN": site[user]}
    return handoff_cli(env, *args, "--url", central.url)


def test_withdrawal_while_it_waits_then_refusals_once_it_moved(site):
    central = site["central"]
    # Given bob's approval, 1 of 2
    assert sign(site, "bob", comment="looks right", to="approved") == (
        201,
        {"stage": "validated", "waiting_for": "approved"},
    )
    assert queue_entry(central)["missing"] == {"reviewer": 1}
    # carol cannot take bob's back, nor can an admin
    for user in ("carol", "adam"):
        status, body = sign(site, user, "withdraw", to="approved")
        err = assert_error(status, body, 409, "nothing_to_withdraw")
        assert err["message"] == (
            f"{user} has no sign-off of churn:1 for approved to withdraw; nothing was changed."
        )
        assert err["hint"] == "Only its author withdraws a sign-off (bob signed)."
    # When bob withdraws it, saying why
    status, body = sign(site, "bob", "withdraw", to="approved", comment="wrong data slice")
    assert (status, body) == (
        200,
        {
            "stage": "validated",
            "waiting_for": "approved",
            "withdrawn": {
                "stage": "approved",
                "role": "reviewer",
                "user": "bob",
                "decision": "approve",
            },
        },
    )
    # Then the reviewers' webhook is told again that it waits for review, with whose
    # sign-off went (the first notice came when it was validated), signed as the first
    again = until(lambda: review_notices()[1:], timeout=60, what="the review notice again")
    first = review_notices()[0]["body"]
    assert (first["next"], first["missing"], "withdrawn" in first) == (
        "approved",
        {"reviewer": 2},
        False,
    )
    (notice,) = again
    assert notice["ok"] is True and notice["id"] != review_notices()[0]["id"]
    body = notice["body"]
    assert (body["stage"], body["next"], body["missing"], body["signoffs"]) == (
        "validated",
        "approved",
        {"reviewer": 2},
        [],
    )
    assert body["withdrawn"] == {
        "stage": "approved",
        "role": "reviewer",
        "user": "bob",
        "decision": "approve",
    }
    assert body["url"] == f"{central.url}/api/v1/models/churn/versions/1"
    # Then it waits with 0 of 2, and the reviews command says so
    entry = queue_entry(central)
    assert (entry["missing"], entry["signoffs"]) == ({"reviewer": 2}, [])
    out = cli_as(site, "dave", "reviews")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "churn:1  validated -> approved  needs 2 reviewer" in out.stdout
    assert "in: -" in out.stdout, out.stdout
    # a second withdrawal finds nothing
    status, body = sign(site, "bob", "withdraw")
    assert_error(status, body, 409, "nothing_to_withdraw")
    # the audit entry keeps what was withdrawn and why
    rows = central.sql("SELECT actor, payload FROM audit WHERE action = 'signoff.withdraw'")
    assert [(r["actor"], json.loads(r["payload"])) for r in rows] == [
        (
            "bob",
            {
                "stage": "approved",
                "role": "reviewer",
                "user": "bob",
                "decision": "approve",
                "comment": "looks right",
                "signed": json.loads(rows[0]["payload"])["signed"],
                "why": "wrong data slice",
            },
        )
    ]
    # carol's approval alone no longer moves it
    assert sign(site, "carol", comment="fine", to="approved")[1] == {
        "stage": "validated",
        "waiting_for": "approved",
    }
    assert queue_entry(central)["missing"] == {"reviewer": 1}

    # The CLI: carol withdraws hers from a shell, one line, then signs again
    out = cli_as(site, "carol", "signoff", "churn:1", "--withdraw", "-m", "still checking")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [
        "churn:1: your sign-off for approved is withdrawn; it stays validated, waiting for "
        "the sign-offs for approved."
    ]
    assert queue_entry(central)["missing"] == {"reviewer": 2}
    assert sign(site, "carol", to="approved")[1]["waiting_for"] == "approved"
    # a usage mistake: exit 2, nothing sent
    out = cli_as(site, "bob", "signoff", "churn:1", "--withdraw", "--reject")
    assert out.returncode == 2
    assert out.stderr.splitlines()[0] == (
        "--withdraw takes your sign-off back; it cannot also --reject."
    ), out.stderr

    # When dave approves, with carol's the version moves
    assert sign(site, "dave", to="approved")[1] == {"stage": "approved"}
    assert queue_entry(central)["next"] == "canary"  # the default policy's next sign-off
    # Then dave's withdrawal is refused: it counted
    status, body = sign(site, "dave", "withdraw", to="approved")
    err = assert_error(status, body, 409, "signoff_counted")
    assert err["message"] == (
        "churn:1 already moved to approved; your sign-off counted and stays on the record. "
        "Nothing was withdrawn."
    )
    assert err["hint"] == (
        "To stop it: ask an admin to archive it (jupyter handoff stage churn:1 archived), or "
        "reject it for canary (jupyter handoff signoff churn:1 --reject -m WHY)."
    )
    # without --to the same: central finds the sign-off that counted
    out = cli_as(site, "carol", "signoff", "churn:1", "--withdraw")
    assert out.returncode == 1
    assert out.stdout + out.stderr == f"{err['message']}\n{err['hint']}\n"
    # bob, whose sign-off was withdrawn, has nothing there (nor for canary, next)
    status, body = sign(site, "bob", "withdraw")
    err = assert_error(status, body, 409, "nothing_to_withdraw")
    assert err["message"] == (
        "bob has no sign-off of churn:1 for canary to withdraw; nothing was changed."
    )
    # a decision central does not know is a 400 naming the three
    status, body = sign(site, "bob", "retract")
    assert "'withdraw'" in assert_error(status, body, 400)["message"]

    # The chain verifies, and the dossier of a version with withdrawn sign-offs too
    out = central.cli("audit", "verify", "--agent-role", "central")
    assert out.returncode == 0, out.stdout + out.stderr
    path = site["tmp"] / "churn-1.zip"
    out = handoff_cli(central.env, "dossier", "churn:1", "--out", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(zipfile.ZipFile(path).read("dossier.json"))
    assert [(s["user"], s["decision"]) for s in doc["signoffs"]] == [
        ("carol", "approve"),
        ("dave", "approve"),
    ]
    assert [(s["user"], s["why"]) for s in doc["signoffs_withdrawn"]] == [
        ("bob", "wrong data slice"),
        ("carol", "still checking"),
    ]
    html = zipfile.ZipFile(path).read("dossier.html").decode()
    assert "Withdrawn before they counted" in html and "wrong data slice" in html
    env = {**central.env, "JUPYTER_RUNTIME_DIR": str(site["tmp"] / "nowhere")}  # offline
    out = handoff_cli(env, "dossier", "verify", str(path))
    assert out.returncode == 0, out.stdout + out.stderr

    # A rejection is a sign-off too: once it ended the version, withdrawing it is refused
    # as counted, naming it, not as one that does not exist
    assert sign(site, "dave", "reject", comment="latency", to="canary")[1]["stage"] == "rejected"
    status, body = sign(site, "dave", "withdraw")
    err = assert_error(status, body, 409, "signoff_counted")
    assert err["message"].startswith("churn:1 is rejected; your sign-off for canary "), err


def test_a_withdrawal_acknowledged_just_before_a_kill_9_is_still_noticed(site):
    """The review notice of a withdrawal commits with it: acknowledged, it is not lost."""
    central, local = site["central"], site["local"]
    X, y = site["X"], site["y"]
    # Given churn:2 validated at central, its first review notice taken, and carol's approval
    v = push_model(local, LogisticRegression(C=0.5).fit(X, y), "churn", X=X, y=y)
    assert v.number == 2
    stage = lambda: central.request("GET", "/api/v1/models/churn/versions/2")[1].get("stage")  # noqa: E731
    until(lambda: stage() == "validated", timeout=120, what="churn:2 validated at central")
    until(lambda: review_notices(2), timeout=60, what="churn:2's first review notice")
    path = "/api/v1/models/churn/versions/2/signoffs"
    status, _ = central.request("POST", path, {"decision": "approve"}, token=site["carol"])
    assert status == 201
    # and the reviewers' webhook down, so nothing can be sent before the kill
    port = site["hook"].server_port
    site["hook"].shutdown()
    site["hook"].server_close()
    # When carol withdraws it, and central is killed the moment it acknowledges
    status, body = central.request(
        "POST", path, {"decision": "withdraw", "comment": "rerun"}, token=site["carol"]
    )
    central.kill9()
    assert (status, body["waiting_for"]) == (200, "approved"), body
    # and the webhook is back, and central started again
    site["hook"] = HTTPServer(("127.0.0.1", port), Hook)
    threading.Thread(target=site["hook"].serve_forever, daemon=True).start()
    central.start()
    # Then the reviewers are told it waits again, once, saying whose sign-off went
    until(lambda: review_notices(2)[1:], timeout=60, what="the withdrawal's review notice")
    until(lambda: not central.sql("SELECT id FROM notices"), timeout=30, what="the row's end")
    first, again = review_notices(2)
    assert "withdrawn" not in first["body"]
    assert again["ok"] is True
    assert (again["body"]["missing"], again["body"]["withdrawn"]) == (
        {"reviewer": 2},
        {"stage": "approved", "role": "reviewer", "user": "carol", "decision": "approve"},
    )
