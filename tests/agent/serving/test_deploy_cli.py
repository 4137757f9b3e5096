"""IT's deployment commands as an engineer runs them in a shell, against a real central that
serves: sign-offs up to production, a canary and its share, a refused promotion, a rollback
that moves the traffic, and the mistakes, each one line and an exit code."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from serving_support import Client, central_stage, push_to_central, serving_url, start_pair
from sklearn.linear_model import LogisticRegression
from support import handoff_cli, until

from handoff_agent.vocabulary import when_text

ROW = {"a": 0.5, "b": -1.0, "c": 2.0, "d": 0.0}


def handoff(agent, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    """``jupyter handoff ARGS``, finding central through its runtime dir (or ``--url``)."""
    env = agent.env if token is None else {**agent.env, "HANDOFF_TOKEN": token}
    return handoff_cli(env, *args)


def ok(agent, *args: str, token: str | None = None) -> str:
    out = handoff(agent, *args, token=token)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def refused(agent, *args: str, code: int = 1, token: str | None = None) -> str:
    out = handoff(agent, *args, token=token)
    assert out.returncode == code, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr, out.stderr
    assert out.stdout == "", out.stdout  # what went wrong is on stderr: `--json | jq` reads answers
    return out.stderr


@pytest.fixture(scope="module")
def pair(tmp_path_factory, backend):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    y = (X["a"] + X["b"] > 0).astype(int)
    local, central = start_pair(tmp_path_factory.mktemp("deploy-cli"))
    try:
        v1 = push_to_central(local, central, LogisticRegression().fit(X, y), "churn", X, y)
        yield local, central, X, y, v1
    finally:
        local.stop()
        central.stop()


def test_signoff_canary_traffic_promotion_and_rollback_from_the_shell(pair):
    local, central, X, y, v1 = pair
    # Sign-offs take churn:1 up the policy's stages, one line each: a reviewer's from another
    # machine (--url, the token in HANDOFF_TOKEN), then on central's own (its runtime file)
    rita = central.make_token("rita", "reviewer")
    url = ("--url", central.url)
    assert (
        ok(central, "signoff", f"churn:{v1}", *url, "-m", "looks right", token=rita)
        == f"churn:{v1} is now approved.\n"
    )
    signed = central.request("GET", f"/api/v1/models/churn/versions/{v1}")[1]["signoffs"]
    assert [(s["user"], s["role"], s["comment"]) for s in signed] == [
        ("rita", "reviewer", "looks right")
    ], signed
    ok(central, "signoff", f"churn:{v1}")
    ok(central, "signoff", f"churn:{v1}")
    assert central_stage(central, "churn", v1) == "production"
    client = Client(serving_url(central), central.token)
    until(lambda: client.invocations([ROW])[0] == 200, timeout=120, what="churn:1 serving")
    shown = ok(central, "deployment", "churn")
    assert "serving: production v1 100%" in shown, shown

    # A second version goes to canary at the policy's 30 %; an admin sets its share to 50 %
    v2 = push_to_central(local, central, LogisticRegression(C=0.01).fit(X, y), "churn", X, y)
    ok(central, "signoff", f"churn:{v2}")
    ok(central, "signoff", f"churn:{v2}")
    assert central_stage(central, "churn", v2) == "canary"
    shown = ok(central, "traffic", "churn", "50%")
    line = shown.splitlines()[0]
    assert "production v1 50%" in line and f"canary v{v2} 50%" in line, shown
    assert re.search(r"\n  guardrails: canary \w+ at 50%: ", shown), shown  # a line, not a dict
    data = central.request("GET", "/api/v1/models/churn/deployment")[1]
    assert {s["slot"]: s["traffic"] for s in data["slots"] if s["traffic"]} == {
        "production": 50.0,
        "canary": 50.0,
    }

    # Promotion before the canary's bake is clean is refused, with central's reason
    out = refused(central, "signoff", f"churn:{v2}")
    assert len(out.strip().splitlines()) <= 2 and "bake" in out.lower(), out
    assert central_stage(central, "churn", v2) == "canary"

    # After its bake (the policy's 20 requests), it is promoted; every deployment is listed
    until(
        lambda: (
            client.invocations([ROW])
            and central.request("GET", "/api/v1/models/churn/deployment")[1]["guardrails"][
                "canary"
            ]["state"]
            == "promote_ready"
        ),
        timeout=120,
        what="a clean bake",
    )
    assert ok(central, "signoff", f"churn:{v2}") == f"churn:{v2} is now production.\n"
    listed = ok(central, "deployment")
    assert f"serving: production v{v2} 100%" in listed and "Deployment('churn')" in listed
    listed = json.loads(ok(central, "deployment", "--json"))
    assert [s["version"] for s in listed["churn"]["slots"] if s["traffic"]] == [v2], listed

    # Rollback: churn:1 serves again, and requests are answered by it
    shown = ok(central, "rollback", f"churn:{v2}", "-m", "error rate up")
    assert "serving: production v1 100%" in shown, shown
    until(
        lambda: client.invocations([ROW])[1]["X-Handoff-Model-Version"] == "1",
        timeout=60,
        what="churn:1 answering again",
    )
    assert central_stage(central, "churn", v2) == "rollback"
    audit = central.sql("SELECT actor, payload FROM audit WHERE payload LIKE '%error rate up%'")
    assert audit, "the rollback's comment is not in the audit log"
    # The same command again (a second admin on the same alarm) is refused, saying who and
    # when; churn:1 keeps production
    done = central.request("GET", f"/api/v1/models/churn/versions/{v2}")[1]["stages"][-1]
    out = refused(central, "rollback", f"churn:{v2}", "-m", "me too")
    assert out.splitlines()[0] == (
        f"churn:{v2} was rolled back already, by {done['by']} at {when_text(done['since'])} "
        "('error rate up'); nothing was done."
    ), out
    assert (central_stage(central, "churn", 1), central_stage(central, "churn", v2)) == (
        "production",
        "rollback",
    )

    # A reviewer's sign-off on the production version is refused: nothing follows it by
    # sign-off (its next stage, archived, would hand all traffic to whatever else serves)
    out = refused(central, "signoff", "churn:1", *url, token=rita)
    assert "churn:1 is production; there is nothing to sign off now, and nothing was" in out, out
    assert central_stage(central, "churn", 1) == "production"

    # A canary baked clean against churn:2 bakes again once churn:2 is rolled back
    v3 = push_to_central(local, central, LogisticRegression(C=0.1).fit(X, y), "churn", X, y)
    ok(central, "signoff", f"churn:{v3}")
    ok(central, "signoff", f"churn:{v3}")
    until(lambda: canary_state(client, central) == "promote_ready", 120, "v3's clean bake")
    ok(central, "signoff", f"churn:{v3}", "--to", "production")
    assert central_stage(central, "churn", v3) == "production"
    v4 = push_to_central(local, central, LogisticRegression(C=0.3).fit(X, y), "churn", X, y)
    ok(central, "signoff", f"churn:{v4}")
    ok(central, "signoff", f"churn:{v4}")
    until(lambda: canary_state(client, central) == "promote_ready", 120, "v4's clean bake")
    # The bake starts again at the rollback: the requests this loop sent just before it (in
    # the stats slice it comes in) do not count
    ok(central, "rollback", "churn", "-m", "v3 misbehaves")
    assert canary_state(client, central, send=False) == "baking"
    # and once it has, two reviewers promoting it at once: one moves it, the other is told
    until(lambda: canary_state(client, central) == "promote_ready", 120, "v4's bake again")
    both = [
        subprocess.Popen(
            [sys.executable, "-m", "handoff_agent", "signoff", f"churn:{v4}"],
            env=central.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    said = sorted((p.wait(60), *p.communicate()) for p in both)
    assert [rc for rc, *_ in said] == [0, 1], said
    assert said[0][1] == f"churn:{v4} is now production.\n", said
    # (it read the stage before the other's promotion landed, or after it)
    late = said[1][2]
    assert "no longer applies; nothing was recorded" in late or "nothing to sign off" in late
    assert central_stage(central, "churn", v4) == "production"
    shown = ok(central, "deployment", "churn")
    assert f"serving: production v{v4} 100%" in shown, shown


def canary_state(client, central, send: bool = True) -> str:
    """The guardrails' state of churn's canary, after a request to the model (``send``)."""
    if send:
        client.invocations([ROW])
    view = central.request("GET", "/api/v1/models/churn/deployment")[1]
    return (view["guardrails"]["canary"] or {}).get("state")


def test_mistakes_are_one_line_and_an_exit_code(pair):
    local, central, X, y, _ = pair
    # Usage mistakes: exit 2, what is wrong and the usage line
    for args, said in (
        (("traffic", "churn", "lots"), "'lots' is not a percentage"),
        (("traffic", "churn", "nan"), "'nan' is not a percentage"),
        (("traffic", "churn", "1_0"), "'1_0' is not a percentage"),
        (("traffic", "churn", "\u0665"), "'\u0665' is not a percentage"),
        (("traffic", "churn", "1e-320"), "'1e-320' is not a percentage"),
        (("traffic", "a..b", "5"), "'a..b' is not a model name"),
        (("traffic", "churn", "150"), "A traffic share is between 0 and 100, not 150."),
        (("traffic", "churn", "100.5%"), "A traffic share is between 0 and 100, not 100.5."),
        (("signoff", "churn"), "'churn' is not NAME:N"),
        (("rollback",), "Expected 1 argument, got 0"),
        (("rollback", "churn:x"), "'churn:x' is not NAME:N"),
        (("stage", "churn:1"), "Expected 2 arguments, got 1"),
        (("deployment", "../etc"), "'../etc' is not a model name"),
    ):
        out = refused(central, *args, code=2)
        assert out.splitlines()[0].startswith(said) and "Usage: jupyter handoff" in out, out
    # Central's refusals: exit 1, its message (and hint)
    for args, said in (
        (("traffic", "nope", "10"), "nope"),
        (("deployment", "nope"), "No model named 'nope'."),
        (("signoff", "churn:99"), "no version 99"),
        (("stage", "churn:1", "nowhere"), "nowhere"),
        (("signoff", "churn:1", "--to", "nosuch"), "'nosuch' is not a stage."),
    ):
        out = refused(central, *args)
        assert said in out and len(out.strip().splitlines()) <= 2, out
    # A canary with no production serves everything: a share asked for it is refused, saying so
    fresh = push_to_central(local, central, LogisticRegression().fit(X, y), "fresh", X, y)
    ok(central, "signoff", f"fresh:{fresh}")
    ok(central, "signoff", f"fresh:{fresh}")
    out = refused(central, "traffic", "fresh", "20")
    assert "'fresh' has no production version: its canary, fresh:1, serves all" in out, out
    assert "stage fresh:1 archived" in out
    assert "serving: canary v1 100%" in ok(central, "deployment", "fresh")
    # A reviewer may sign off but not move traffic; central names the role it needs
    reviewer = central.make_token("rita", "reviewer")
    out = refused(central, "traffic", "churn", "10", "--url", central.url, token=reviewer)
    assert "admin" in out, out
    # A share out of range is said before anything is sent: nothing answers at this --url
    out = refused(
        central, "traffic", "churn", "150", "--url", "http://127.0.0.1:9", code=2, token="t"
    )
    assert out.startswith("A traffic share is between 0 and 100, not 150.\n"), out
    # --url without HANDOFF_TOKEN: which token to set, before anything is sent
    out = refused(central, "deployment", "--url", central.url)
    assert out.startswith(f"No token for {central.url}: set HANDOFF_TOKEN"), out
    # No central running: where to start one
    out = refused(central, "deployment", "--url", "http://127.0.0.1:9", token="t")
    assert "not answering" in out, out
