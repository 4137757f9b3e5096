"""Two real agents on loopback: a local one forwarding to a central one, and people signing off."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from support import RunningAgent, forwarding_args, handoff_cli, push_model, until, wait_checked

FIRST_SECRET = "first-secret-3kT9qLm2VxZp7RwY8nB4"  # 128+ bits, or central refuses to start
SECOND_SECRET = "second-secret-Hc5Jd8Ft1Gs6Ka0Mb3"

POLICY = """
[intake]
trusted_types = []
accept_pickle = false
revalidate = {revalidate}

[intake.senders]  # alice's two secrets: a rotation
alice = ["first-secret-3kT9qLm2VxZp7RwY8nB4", "second-secret-Hc5Jd8Ft1Gs6Ka0Mb3"]

[stages.approved]
reviewer = 1
[stages.canary]
reviewer = 1
[stages.production]
reviewer = 1
admin = 1
"""


def start_pair(
    tmp_path,
    revalidate=True,
    local_args=(),
    central_port=None,
    intake="",
    central_prefix=(),
    local_prefix=(),
    central_args=(),
):
    """``intake``: more lines for central's [intake] table; ``central_prefix`` and
    ``local_prefix``: what each agent runs under (``support.small_disk``)."""
    policy = tmp_path / "policy.toml"
    text = POLICY.format(revalidate=str(revalidate).lower())
    policy.write_text(text.replace("\n\n[intake.senders]", f"\n{intake}\n\n[intake.senders]", 1))
    central = RunningAgent(
        tmp_path / "central",
        tmp_path / "rt-central",
        ["--role", "central", "--policy", str(policy), *central_args]
        + (["--port", str(central_port)] if central_port else []),
        prefix=list(central_prefix),
    )
    central.start()
    local = RunningAgent(
        tmp_path / "local",
        tmp_path / "rt-local",
        [*forwarding_args(central, FIRST_SECRET, backoff_cap=0.5), *local_args],
        prefix=list(local_prefix),
    )
    local.start()
    return local, central


@pytest.fixture
def pair(tmp_path):
    local, central = start_pair(tmp_path)
    yield local, central
    local.stop()
    central.stop()


@pytest.fixture(scope="module")
def model_and_data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(600, 4)), columns=list("abcd"))
    y = (X["a"] + X["b"] > 0).astype(int)
    return LogisticRegression().fit(X, y), X, y


def local_stage(local, name, number):
    return local.request("GET", f"/api/v1/models/{name}/versions/{number}")[1].get("stage")


def test_push_forward_validate_sign_off_to_production(pair, model_and_data):
    local, central = pair
    model, X, y = model_and_data
    bob = central.make_token("bob", "reviewer")
    carol = central.make_token("carol", "admin")

    # Given a push that passes locally
    v = push_model(local, model, "churn", X=X, y=y)
    assert wait_checked(local, "churn", v.number)["status"] in ("passed", "warned")
    # Then central receives it, re-validates it, and the local agent sees each stage
    until(lambda: local_stage(local, "churn", v.number) == "validated", timeout=90)
    remote = central.request("GET", "/api/v1/models/churn/versions/1")[1]
    assert [s["stage"] for s in remote["stages"]] == ["received", "validated"]
    assert remote["serialization"] == "skops"  # converted before it left the analyst's machine
    assert remote["pushed_by"] == "alice"  # the sender whose secret signed the delivery

    path = "/api/v1/models/churn/versions/1"
    sign = lambda tok, note: central.request(  # noqa: E731
        "POST", path + "/signoffs", {"decision": "approve", "comment": note}, token=tok
    )
    assert sign(bob, "looks right") == (201, {"stage": "approved"})
    assert sign(bob, "canary please") == (201, {"stage": "canary"})
    # production needs a reviewer and an admin
    assert sign(bob, "ship it")[1] == {"stage": "canary", "waiting_for": "production"}
    assert sign(carol, "approved by risk") == (201, {"stage": "production"})

    until(lambda: local_stage(local, "churn", v.number) == "production", timeout=90)
    mirrored = local.request("GET", f"/api/v1/models/churn/versions/{v.number}")[1]
    assert [s["stage"] for s in mirrored["stages"]] == [
        "received",
        "validated",
        "approved",
        "canary",
        "production",
    ]
    assert {s["user"] for s in mirrored["signoffs"]} == {"bob", "carol"}
    lineage = local.request("GET", f"/api/v1/lineage?model=churn&version={v.number}")[1]
    assert lineage["stage"] == "production" and lineage["data"]
    fp = lineage["data"][0]["dataset"]
    for shown in (fp, fp[:16]):  # the whole fingerprint, or the 16 digits reports show
        used = local.request("GET", f"/api/v1/lineage?dataset={shown}")[1]
        assert next((u["model"], u["number"], u["stage"]) for u in used["versions"]) == (
            "churn",
            v.number,
            "production",
        )
    # the reports central wrote before its validation are gone with it: fsck has no orphan
    until(lambda: "unreferenced" not in central.cli("fsck").stdout, what="no orphan blob")
    assert central.cli("fsck").stdout.splitlines()[-1] == "fsck: OK"


def test_sign_off_rules_and_roles(pair, model_and_data):
    local, central = pair
    model, X, y = model_and_data
    alice = central.make_token("alice", "reviewer")  # the pusher, also a reviewer at central
    ann = central.make_token("ann", "analyst")
    bob = central.make_token("bob", "reviewer")
    carol = central.make_token("carol", "admin")
    v = push_model(local, model, "risk", X=X, y=y)
    until(lambda: local_stage(local, "risk", v.number) == "validated", timeout=90)
    path = "/api/v1/models/risk/versions/1"
    approve = {"decision": "approve", "comment": ""}

    # The pusher cannot approve their own version
    status, body = central.request("POST", path + "/signoffs", approve, token=alice)
    assert (status, body["error"]["code"]) == (403, "self_signoff")
    # A missing sign-off blocks the transition, even for an admin
    status, body = central.request("POST", path + "/transition", {"to": "approved"}, token=carol)
    assert (status, body["error"]["code"]) == (409, "missing_signoffs")
    # Wrong roles get 403 on every protected route
    for token, method, route, payload in [
        (ann, "POST", path + "/signoffs", approve),
        (ann, "POST", path + "/transition", {"to": "approved"}),
        (bob, "POST", path + "/transition", {"to": "approved"}),
        (bob, "POST", path + "/forward", {"to": "central"}),
        (bob, "POST", "/api/v1/models/risk/versions", None),
    ]:
        status, body = central.request(method, route, payload, token=token)
        assert (status, body["error"]["code"]) == (403, "forbidden_role"), route
    # said in a reviewer's words: what was refused and the role it needs
    body = central.request("POST", path + "/signoffs", approve, token=ann)[1]
    assert body["error"]["message"] == (
        "ann (analyst) may not sign versions off: that needs the reviewer or admin role."
    ), body
    # A reviewer may reject
    status, body = central.request(
        "POST", path + "/signoffs", {"decision": "reject", "comment": "no"}, token=bob
    )
    assert (status, body) == (201, {"stage": "rejected"})
    until(lambda: local_stage(local, "risk", v.number) == "rejected", timeout=90)
    # and the analyst reads why, in the words the notebook's history and widget show
    from jupyter_handoff.widgets.style import stage_text

    detail = local.request("GET", f"/api/v1/models/risk/versions/{v.number}")[1]
    assert stage_text(detail) == "rejected by bob: no"
    assert central.cli("audit", "verify").returncode == 0


def test_the_review_queue_shows_what_waits_and_who_may_sign(pair, model_and_data):
    """A reviewer's way in: what waits for a sign-off, oldest first, and with ``mine`` only
    what they may sign now (a role still missing, not their own push, not signed yet)."""
    local, central = pair
    model, X, y = model_and_data
    alice = central.make_token("alice", "reviewer")  # the pusher, also a reviewer at central
    bob = central.make_token("bob", "reviewer")
    carol = central.make_token("carol", "admin")
    for name in ("churn", "risk"):
        v = push_model(local, model, name, X=X, y=y)
        until(lambda n=name, v=v: local_stage(local, n, v.number) == "validated", timeout=90)

    def queue(token=None, mine=True):
        path = "/api/v1/reviews" + ("?mine=true" if mine else "")
        status, out = central.request("GET", path, **({"token": token} if token else {}))
        assert status == 200, out
        return {(r["model"], r["version"]): r for r in out["reviews"]}

    # Both wait for a reviewer to approve them, oldest first
    everything = queue(mine=False)
    assert list(everything) == [("churn", 1), ("risk", 1)]
    churn = everything["churn", 1]
    assert (churn["stage"], churn["next"], churn["missing"]) == (
        "validated",
        "approved",
        {"reviewer": 1},
    )
    assert churn["signoffs"] == [] and churn["blocked"] is None
    assert churn["pushed_by"] == "alice" and churn["verdict"] in ("pass", "warn")
    # alice pushed them and carol's admin role is not what they need: nothing is theirs
    assert queue(alice) == {} and queue(carol) == {}
    assert list(queue(bob)) == [("churn", 1), ("risk", 1)]
    # A page at a time (next: the after of the next page); the local agent relays the query
    status, first = central.request("GET", "/api/v1/reviews?limit=1")
    assert status == 200 and [r["model"] for r in first["reviews"]] == ["churn"], first
    status, rest = central.request("GET", f"/api/v1/reviews?limit=1&after={first['next']}")
    assert [r["model"] for r in rest["reviews"]] == ["risk"] and "next" not in rest, rest
    status, churn_only = local.request("GET", "/api/v1/models/churn/reviews?limit=1")
    assert status == 200 and len(churn_only["reviews"]) == 1 and "next" not in churn_only
    for agent, path in ((central, "/api/v1/reviews"), (local, "/api/v1/models/churn/reviews")):
        for bad in ("limit=0", "limit=1001", "after=-1", "after=x"):
            status, body = agent.request("GET", f"{path}?{bad}")
            assert (status, body["error"]["code"]) == (400, "bad_request"), (path, bad)

    # When bob takes churn to canary and signs it for production, it waits for an admin
    sign = "/api/v1/models/churn/versions/1/signoffs"
    for _ in range(3):
        assert central.request("POST", sign, {"decision": "approve"}, token=bob)[0] == 201
    churn = queue(mine=False)["churn", 1]
    assert (churn["stage"], churn["next"], churn["missing"]) == (
        "canary",
        "production",
        {"admin": 1},
    )
    assert [(s["user"], s["role"], s["decision"]) for s in churn["signoffs"]] == [
        ("bob", "reviewer", "approve")
    ]
    assert list(queue(bob)) == [("risk", 1)] and list(queue(carol)) == [("churn", 1)]

    # The shell shows the same, for bob
    env = {**central.env, "HANDOFF_TOKEN": bob}
    out = handoff_cli(env, "reviews", "--mine", "--url", central.url)
    assert out.returncode == 0, out.stdout + out.stderr
    first, hint = out.stdout.strip().splitlines()
    assert first.startswith("risk:1  validated -> approved  needs 1 reviewer  in: -  "), first
    assert hint.startswith("Sign: jupyter handoff signoff NAME:N")
    # on central's machine, without --url: bob still, not the owner the runtime file names
    here = handoff_cli(env, "reviews", "--mine")
    assert here.stdout == out.stdout, here.stdout + here.stderr
    out = handoff_cli({**env, "HANDOFF_TOKEN": carol}, "reviews", "--url", central.url)
    assert "churn:1  canary -> production  needs 1 admin  in: bob (reviewer)" in out.stdout
    # Once carol signs, churn is in production and waits for no one
    assert central.request("POST", sign, {"decision": "approve"}, token=carol)[1] == {
        "stage": "production"
    }
    assert list(queue(mine=False)) == [("risk", 1)]
    out = handoff_cli({**env, "HANDOFF_TOKEN": carol}, "reviews", "--mine", "--url", central.url)
    assert out.stdout.strip() == "No version waits for your sign-off.", out.stdout

    # A mistake is a 400; the local agent has no queue (sign-offs happen at central)
    status, body = central.request("GET", "/api/v1/reviews?mine=yes")
    assert (status, body["error"]["code"]) == (400, "bad_request")
    status, body = local.request("GET", "/api/v1/reviews")
    assert (status, body["error"]["code"]) == (404, "not_central")


def test_the_analyst_sees_what_central_has_under_centrals_number(tmp_path, model_and_data):
    """Central numbers every sender's versions of a name: here this machine's churn:2 is
    central's churn:1. The versions list says so (``central_version``), and the notebook's
    history puts what central waits for beside churn:2, never beside churn:1, which central
    never got."""
    from test_outbox_cli import in_a_notebook

    model, X, y = model_and_data
    local, central = start_pair(tmp_path, local_args=["--HandoffAgent.forward_on=[]"])
    try:
        push_model(local, model, "churn", X=X, y=y)
        push_model(local, LogisticRegression(C=0.01).fit(X, y), "churn", X=X, y=y)
        path = "/api/v1/models/churn/versions/2/forward"
        assert local.request("POST", path, {"to": "central"})[0] == 202
        until(lambda: local_stage(local, "churn", 2) == "validated", timeout=90)
        listed = local.request("GET", "/api/v1/models/churn/versions")[1]["versions"]
        assert [(v["number"], v["central_version"]) for v in listed] == [(2, 1), (1, None)]
        assert not {"id", "central_remote"} & set(listed[0]), listed[0]  # the store's own
        detail = local.request("GET", "/api/v1/models/churn/versions/2")[1]
        assert detail["central_version"] == 1

        history = in_a_notebook(local, "%mlops history churn")[0].splitlines()
        waits = [line.split()[0] for line in history if "[waits for 1 reviewer" in line]
        assert waits == ["2"], history
    finally:
        local.stop()
        central.stop()


def test_a_central_token_central_refuses_is_said_in_status_and_the_log(tmp_path, model_and_data):
    """Deliveries are signed with the secret, so they go on; the stages come back with the
    token. A token central refuses (revoked, or the per-start one of a restarted central)
    stopped them silently: now the log says it once, and `status` says it."""
    model, X, y = model_and_data
    local, central = start_pair(tmp_path)
    try:
        local.stop()  # its token for central: one central does not know
        local.args = [
            "--CentralDestination.token=revoked" if a.startswith("--CentralDestination.token")
            else a for a in local.args
        ]  # fmt: skip
        local.start()
        push_model(local, model, "churn", X=X, y=y)
        said = "Central refuses this agent's token (401)"

        def refused():
            problems = local.request("GET", "/api/v1/outbox")[1]["problems"]
            return problems and problems[0]

        assert until(refused, timeout=90, what="the refusal noticed").startswith(said)
        out = handoff_cli(local.env, "status")
        assert said in out.stdout and "c.CentralDestination.token" in out.stdout, out.stdout
        out = handoff_cli(local.env, "status", "--json")  # the same, for a script or a monitor
        (problem,) = json.loads(out.stdout)["problems"]
        assert problem.startswith(said) and "c.CentralDestination.token" in problem, problem
        out = handoff_cli(local.env, "outbox")  # the deliveries went; the stages do not come
        assert out.stdout.startswith(said), out.stdout
        assert local.read_log().count(said) == 1

        # a dossier relayed through the local agent: central's 401 is about the agent's
        # token, not the analyst's (a 409 saying so, as the other relays answer)
        def dossier_error():
            status, body = local.request("GET", "/api/v1/models/churn/versions/1/dossier")
            err = body.get("error", {}) if isinstance(body, dict) else {}
            return err if status == 409 and err.get("code") == "central_token" else None

        err = until(dossier_error, timeout=60, what="the dossier's refusal", every=0.5)
        assert err["message"].startswith("Central refused this agent's central token"), err
    finally:
        local.stop()
        central.stop()
