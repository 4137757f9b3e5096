"""The guardrails at central, end to end: real agents, real HTTP, sandboxed workers.

A canary that fails on some inputs is rolled back by the guardrails within one tick of its
first failed request: stage, audit rows, events, a signed delivery to the webhook destination
(a real receiver), and the traffic all go back to production.
A sound canary then cannot be promoted before its clean bake, and can be after it. Runs on
both metadata backends.
"""

from __future__ import annotations

import http.client
import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
from serving_support import (
    POLICY,
    Client,
    central_stage,
    push_to_central,
    serving_url,
    sign,
    start_pair,
)
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from support import Receiver, RunningAgent, start_receiver, until

from handoff_agent.serving.guardrails import seconds
from handoff_agent.serving.server import SLICE_SECONDS

assert RunningAgent  # this module starts agents: conftest runs it on every backend

GUARDED = POLICY.split("[deploy]")[0] + (
    "[deploy]\n"
    "canary_percent = 50\n"
    "min_requests = 20\n"
    "bake_seconds = 2\n"
    "p99_slack_ms = 50\n"  # cold workers on a shared machine; the alarm itself is tested
    "max_psi = 0.5\n"  # in test_guardrails.py
)
UNSEEN = {"a": 0.5, "b": -1.0, "c": 2.0, "d": 0.0}  # "a" = 0.5 is not in the training data
WEBHOOK_SECRET = "guardrail-webhook-secret-3Kp8Wd5Rn2"


class OnCall(Receiver):
    """The on-call webhook: each signed delivery, as received."""

    received: list = []
    secret = WEBHOOK_SECRET


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    y = (X["a"] + X["b"] > 0).astype(int)
    return X, y


def brittle(X, y):
    """Fails on any value of ``a`` it did not see in training (a one-hot with
    handle_unknown="error"): the degraded version."""
    ct = ColumnTransformer(
        [("a", OneHotEncoder(handle_unknown="error"), ["a"])], remainder="passthrough"
    )
    return Pipeline([("ct", ct), ("lr", LogisticRegression())]).fit(X, y)


@pytest.fixture(scope="module")
def site(tmp_path_factory, backend, data):
    X, y = data
    hook, hook_url = start_receiver(OnCall, "/on-call")
    webhook = [
        "--forward-to",
        "webhook",
        f"--WebhookDestination.url={hook_url}",
        f"--WebhookDestination.secret={WEBHOOK_SECRET}",
        f"--WebhookDestination.allowed_urls={json.dumps([hook_url])}",
    ]
    local, central = start_pair(tmp_path_factory.mktemp("guarded"), webhook, policy_text=GUARDED)
    try:
        number = push_to_central(local, central, LogisticRegression().fit(X, y), "churn", X, y)
        sign(central, "churn", number, "production")
        client = Client(serving_url(central), central.token)
        row = X.iloc[0].to_dict()
        until(lambda: client.invocations([row])[0] == 200, timeout=120, what="churn:1 serving")
        yield local, central, client
    finally:
        local.stop()
        central.stop()
        hook.shutdown()


def read_events(agent: RunningAgent, found: list, stop: threading.Event) -> None:
    """The agent's SSE stream, as the notebook and the panel read it, into ``found``."""
    conn = http.client.HTTPConnection(agent.host, agent.port, timeout=120)
    conn.request("GET", "/api/v1/events", headers={"Authorization": f"token {agent.token}"})
    resp = conn.getresponse()
    while not stop.is_set():
        line = resp.fp.readline()
        if not line:
            return
        if line.startswith(b"data: "):
            found.append(json.loads(line[6:]))


def restart_after_requests(central, client, number: int, rows: list[dict]) -> None:
    """Twenty requests to canary ``number`` (by version; ``rows``, production's kind of
    traffic, so no prediction shift alarms), then the canary paused and resumed
    at 50 % (its bake starts again), in one stats slice (tried again if a slice's edge fell
    between them); returns once central stored the requests."""
    for _ in range(5):
        time.sleep(SLICE_SECONDS - time.time() % SLICE_SECONDS)  # a fresh slice
        first = int(time.time() // SLICE_SECONDS)
        for row in rows:
            status, headers, _ = client.call(
                "POST", f"/invocations?model=churn&version={number}", {"dataframe_records": [row]}
            )
            assert status == 200 and headers["X-Handoff-Slot"] == "canary"
        for percent in (0, 50):
            status, body = central.request(
                "POST", "/api/v1/models/churn/deployment/traffic", {"percent": percent}
            )
            assert status == 200, body
        since = {s["slot"]: s["since"] for s in view(central)["slots"]}["canary"]
        if int(seconds(since) // SLICE_SECONDS) == first:
            break
    else:
        raise AssertionError("a slice's edge fell between the requests and the resume 5 times")

    def stored() -> bool:
        rows = central.sql(
            "SELECT stats FROM serving_stats WHERE model = 'churn' AND version = :v "
            "AND slot = 'canary' AND slice = :s",
            v=number,
            s=first,
        )
        return sum(json.loads(r["stats"]).get("count", 0) for r in rows) >= 20

    until(stored, timeout=60, what="the requests' stats stored")


def view(central) -> dict:
    status, body = central.request("GET", "/api/v1/models/churn/deployment")
    assert status == 200, body
    return body


def test_an_alarm_rolls_the_canary_back_within_one_tick(site, data):
    local, central, client = site
    X, y = data
    OnCall.received.clear()  # only this test's deliveries (start_receiver emptied it at setup)
    found: list = []
    stop = threading.Event()
    threading.Thread(target=read_events, args=(central, found, stop), daemon=True).start()

    v2 = push_to_central(local, central, brittle(X, y), "churn", X, y)
    sign(central, "churn", v2, "canary")
    until(lambda: "canary" in {s["slot"] for s in view(central)["slots"]}, timeout=30)

    # Requests the canary cannot answer, until the first one reaches it
    def canary_failed():
        status, _, body = client.invocations([UNSEEN])
        return status == 422 and body["error"]["code"] == "predict_failed"

    until(canary_failed, timeout=120, what="a request the canary fails")
    tick = view(central)["guardrails"]["tick"]

    until(lambda: central_stage(central, "churn", v2) == "rollback", timeout=60)
    rows = central.sql(
        "SELECT state, reason, decision FROM guardrail_events WHERE model = 'churn' "
        "AND version = :v AND slot = 'canary' ORDER BY id",
        v=v2,
    )
    decision = json.loads(rows[-1]["decision"])
    assert rows[-1]["state"] == "rollback"
    assert decision["tick"] <= tick + 1, (decision["tick"], tick)  # within one tick
    assert decision["alarm"]["metric"] == "error_rate"
    assert decision["percent"] == 0.0
    reason = rows[-1]["reason"]
    assert reason.startswith("Canary error rate") and "max_error_rate" in reason

    # The stage says why, with its audit rows; the chain still verifies
    version = central.request("GET", f"/api/v1/models/churn/versions/{v2}")[1]
    assert version["stage"] == "rollback"
    assert version["stages"][-1]["comment"] == reason
    assert version["stages"][-1]["by"] == "guardrails"
    audit = central.sql(
        "SELECT action, payload FROM audit WHERE subject = :s ORDER BY seq", s=f"churn:{v2}"
    )
    actions = [(a["action"], json.loads(a["payload"])) for a in audit]
    assert ("stage.enter", {"stage": "rollback", "comment": reason}) in actions
    assert ("deploy.clear", {"slot": "canary", "comment": reason}) in actions
    assert central.cli("audit", "verify").returncode == 0

    # The notebook and the panel hear it (SSE), and so does the agent that pushed it
    until(
        lambda: any(e.get("type") == "guardrail" and e.get("state") == "rollback" for e in found),
        timeout=30,
        what="the guardrail event",
    )
    stop.set()
    event = next(e for e in found if e.get("type") == "guardrail" and e["state"] == "rollback")
    assert (event["model"], event["version"], event["alarm"]["metric"]) == (
        "churn",
        v2,
        "error_rate",
    )
    assert any(e.get("type") == "stage" and e.get("stage") == "rollback" for e in found)
    assert event["production"] == 1

    # The webhook destination (CI, on-call) gets one signed delivery naming the model, the
    # version rolled back, the alarm and the production version now serving
    def delivered():
        return [got for got in OnCall.received if got["body"]["type"] == "guardrail"]

    until(delivered, timeout=30, what="the rollback's webhook delivery")
    [got] = delivered()
    assert got["ok"], got["headers"]  # signed with the destination's secret, fresh
    body = got["body"]
    assert (body["model"], body["version"], body["state"], body["production"]) == (
        "churn",
        v2,
        "rollback",
        1,
    )
    assert body["alarm"]["metric"] == "error_rate" and body["reason"] == reason
    until(
        lambda: any(
            v.get("stage") == "rollback"
            for v in local.request("GET", "/api/v1/models/churn/versions")[1]["versions"]
        ),
        timeout=60,
        what="the rollback mirrored at the local agent",
    )

    # Traffic is back on production: the input the canary failed on is answered again
    served = [client.invocations([UNSEEN]) for _ in range(30)]
    assert {(s, h["X-Handoff-Model-Version"]) for s, h, _ in served} == {(200, "1")}
    slots = {s["slot"]: s for s in view(central)["slots"]}
    assert set(slots) == {"production"} and slots["production"]["traffic"] == 100.0


def test_promotion_waits_for_a_clean_bake(site, data):
    local, central, client = site
    X, y = data
    v3 = push_to_central(local, central, LogisticRegression(C=0.5).fit(X, y), "churn", X, y)
    sign(central, "churn", v3, "canary")
    until(lambda: "canary" in {s["slot"] for s in view(central)["slots"]}, timeout=30)

    # Before the bake: the sign-off for production is refused, saying why
    path = f"/api/v1/models/churn/versions/{v3}/signoffs"
    status, body = central.request("POST", path, {"decision": "approve", "comment": "ship"})
    assert status == 409 and body["error"]["code"] == "bake_not_clean", body
    assert "clean bake" in body["error"]["message"]
    assert central_stage(central, "churn", v3) == "canary"
    # And the review queue says so before anyone tries
    waiting = central.request("GET", "/api/v1/reviews")[1]["reviews"]
    entry = next(r for r in waiting if (r["model"], r["version"]) == ("churn", v3))
    assert entry["next"] == "production" and entry["blocked"]["code"] == "bake_not_clean", entry

    # The webhook (a team's chat, a ticket queue) was told each time the version came to
    # wait for a sign-off, signed, with where to look
    def review_notices():
        got = OnCall.received
        return [g for g in got if g["body"]["type"] == "review" and g["body"]["version"] == v3]

    until(lambda: len(review_notices()) == 3, timeout=30, what="three review notices")
    assert [g["body"]["stage"] for g in review_notices()] == ["validated", "approved", "canary"]
    last = review_notices()[-1]
    assert last["ok"], last["headers"]  # signed with the destination's secret, fresh
    notice = last["body"]
    assert (notice["next"], notice["missing"]) == ("production", entry["missing"])
    assert notice["blocked"]["code"] == "bake_not_clean"
    assert notice["url"] == f"{central.url}/api/v1/models/churn/versions/{v3}"

    # Traffic over the canary and production until the bake is clean
    rows = X.to_dict("records")

    def recorded() -> list[str]:
        states = central.sql(
            "SELECT state FROM guardrail_events WHERE version = :v AND slot = 'canary'", v=v3
        )
        return [r["state"] for r in states]

    def baked():
        for row in rows[:20]:
            assert client.invocations([row])[0] == 200
        rows.append(rows.pop(0))
        # the view judges live; the tick records the change a moment later (a loaded machine)
        ready = view(central)["guardrails"]["canary"]["state"] == "promote_ready"
        return ready and "promote_ready" in recorded()

    until(baked, timeout=120, what="a clean bake, recorded")
    slots = {s["slot"]: s for s in view(central)["slots"]}
    assert slots["canary"]["requests"] >= 20 and slots["canary"]["alarms"] == []
    assert slots["canary"]["error_rate"] == 0.0 and slots["canary"]["p50_ms"] is not None

    # Paused and resumed, the canary bakes again: its 20 requests (the policy's min_requests)
    # just before, in the stats slice it resumed in, do not make a sign-off pass
    restart_after_requests(central, client, v3, rows[:20])
    until(
        lambda: "seconds" not in view(central)["guardrails"]["canary"]["missing"],
        timeout=30,
        what="the bake's 2 s",
    )
    status, body = central.request("POST", path, {"decision": "approve", "comment": "ship"})
    assert status == 409 and body["error"]["code"] == "bake_not_clean", body
    assert "20 more requests" in body["error"]["message"], body
    assert central_stage(central, "churn", v3) == "canary"
    assert {s["slot"]: s["requests"] for s in view(central)["slots"]}["canary"] == 0
    # and once it served enough since, it is promoted
    until(baked, timeout=120, what="a clean bake after the resume")
    sign(central, "churn", v3, "production")
    until(
        lambda: client.invocations([rows[0]])[1]["X-Handoff-Model-Version"] == str(v3),
        timeout=60,
        what=f"churn:{v3} in production",
    )
    assert "promote_ready" in recorded()
    slots = {s["slot"]: s for s in view(central)["slots"]}
    assert (slots["production"]["version"], slots["previous"]["version"]) == (v3, 1)
