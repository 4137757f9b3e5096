"""What central refuses that it once let through (an audit of its API, 5 December 2026): each
refusal a 4xx in the one error shape, and nothing changed behind it. A real central serving
churn:1 in production and churn:2 as its canary, a real local agent beside it."""

from __future__ import annotations

import json
import socket
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
from sklearn.linear_model import LinearRegression, LogisticRegression
from support import RunningAgent, forwarding_args, handoff_cli, until

from handoff_agent import hostile
from handoff_agent.vocabulary import when_text

ROW = {"a": 0.5, "b": -1.0, "c": 2.0, "d": 0.0}
GREEDY = "handoff_agent.hostile.Greedy"


def assert_error(status, body, expected_status, code):
    assert status == expected_status, (status, body)
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, backend):
    """churn:1 in production (its first), churn:2 its canary at 30 %. Central trusts
    ``hostile.Greedy`` too (a model that runs out of memory)."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    y = (X["a"] + X["b"] > 0).astype(int)
    trusting = POLICY.replace("trusted_types = []", f'trusted_types = ["{GREEDY}"]', 1)
    assert trusting != POLICY
    local, central = start_pair(tmp_path_factory.mktemp("refusals"), policy_text=trusting)
    try:
        v1 = push_to_central(local, central, LogisticRegression().fit(X, y), "churn", X, y)
        sign(central, "churn", v1, "production")
        v2 = push_to_central(local, central, LogisticRegression(C=0.5).fit(X, y), "churn", X, y)
        sign(central, "churn", v2, "canary")
        client = Client(serving_url(central), central.token)
        until(
            lambda: (
                {client.invocations([ROW])[1]["X-Handoff-Model-Version"] for _ in range(30)}
                == {str(v1), str(v2)}
            ),
            timeout=120,
            what="both versions serving",
        )
        yield local, central, client, v1, v2
    finally:
        local.stop()
        central.stop()


def slots(central) -> dict:
    view = central.request("GET", "/api/v1/models/churn/deployment")[1]
    return {s["slot"]: (s["version"], s["traffic"]) for s in view["slots"]}


def test_a_rollback_with_no_previous_production_leaves_the_traffic_alone(served):
    _local, central, _client, v1, v2 = served
    before = slots(central)
    assert before["production"][0] == v1 and before["canary"][0] == v2, before
    policy = central.request("GET", "/api/v1/models/churn/deployment")[1]["policy"]
    assert policy["canary_percent"] == 30 and policy["loadtest"]["requests"] == 500  # JSON
    # churn:1 is the first production: rolling it back would hand all traffic to the canary
    status, body = central.request("POST", "/api/v1/models/churn/deployment/rollback", {})
    error = assert_error(status, body, 409, "nothing_to_roll_back")
    assert "no previous" in error["message"], error
    # the way out it names stops the canary, never the production beside it
    assert f"stage churn:{v2} archived" in error["hint"], error
    assert slots(central) == before
    # and taking production out of service would hand the canary all traffic: refused
    path = f"/api/v1/models/churn/versions/{v1}/transition"
    status, body = central.request("POST", path, {"to": "archived", "comment": ""})
    error = assert_error(status, body, 409, "canary_live")
    assert f"stage churn:{v2} archived" in error["hint"], error
    assert slots(central) == before
    assert central_stage(central, "churn", v1) == "production"
    # the shell says it in one line, exit 1
    out = handoff_cli(central.env, "rollback", "churn")
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr, out
    assert "has no previous production version to roll back" in out.stdout + out.stderr, out


def test_a_stale_sign_off_is_refused_not_counted_for_the_stage_after(served):
    _local, central, _client, _v1, v2 = served
    rita = central.make_token("rita", "reviewer")
    path = f"/api/v1/models/churn/versions/{v2}/signoffs"
    signed = len(central.request("GET", f"/api/v1/models/churn/versions/{v2}")[1]["signoffs"])
    # rita approves churn:2 for canary from a queue she read before another reviewer did
    status, body = central.request(
        "POST", path, {"decision": "approve", "to": "canary"}, token=rita
    )
    error = assert_error(status, body, 409, "stage_moved")
    assert "is canary now" in error["message"] and "production" in error["hint"], error
    assert central_stage(central, "churn", v2) == "canary"
    detail = central.request("GET", f"/api/v1/models/churn/versions/{v2}")[1]
    assert len(detail["signoffs"]) == signed  # nothing recorded
    # the same from the shell: one line, exit 1
    out = handoff_cli(
        {**central.env, "HANDOFF_TOKEN": rita},
        "signoff", f"churn:{v2}", "--to", "canary", "--url", central.url,
    )  # fmt: skip
    assert out.returncode == 1 and "is canary now" in out.stdout + out.stderr, out
    assert "Traceback" not in out.stdout + out.stderr
    # Her token revoked (by a name in another case), rita is told to ask for her own token,
    # never pointed at central's owner token, which holds every role
    assert central.cli("token", "revoke", "--user", "Rita").returncode == 0
    status, body = central.request("GET", "/api/v1/reviews", token=rita)
    assert assert_error(status, body, 401, "unauthorized") == {
        "code": "unauthorized",
        "message": "The token is wrong: it is none this agent holds (mistyped, or revoked).",
        "hint": "Ask central's admin for a token of your own (jupyter handoff token create).",
    }


def test_a_clients_out_of_range_values_are_its_400_and_never_roll_the_canary_back(served):
    _local, central, client, _v1, v2 = served
    before = central.request("GET", "/api/v1/models/churn/deployment")[1]
    errors = {s["slot"]: s["errors"] for s in before["slots"]}
    raw = json.dumps({"dataframe_records": [{**ROW, "a": float("inf")}]}).encode()
    assert b"Infinity" in raw
    past = json.dumps({"dataframe_records": [{**ROW, "b": 7.0}]}).replace("7.0", "1e999")
    for body in (raw, past.encode()):  # Infinity, and a number past float64 (read as inf)
        for _ in range(40):  # past the policy's 20 requests a canary is judged on
            status, _, answer = client.call(
                "POST", "/invocations?model=churn", None, {"Content-Type": "application/json"},
                raw=body,
            )  # fmt: skip
            assert_error(status, answer, 422, "out_of_range")
    time.sleep(1)  # five guardrail polls (Serving.poll_interval=0.2)
    assert central_stage(central, "churn", v2) == "canary"
    after = central.request("GET", "/api/v1/models/churn/deployment")[1]
    assert {s["slot"]: s["errors"] for s in after["slots"]} == errors  # counted, not errors


def test_only_an_admin_watches_data_at_central_and_never_its_own_stores(served, tmp_path):
    _local, central, *_ = served
    ana = central.make_token("ana", "analyst")
    registry = central.home / "registry.db"
    query = {"model": "churn", "query": "SELECT 1"}
    # an analyst's token may not make central read what central can reach
    status, body = central.request(
        "POST", "/api/v1/watches", {**query, "source": "sqlite:////tmp/x.db"}, token=ana
    )
    assert_error(status, body, 403, "forbidden_role")
    # an admin may, but not central's own registry (nor any file of its home)
    for source in (f"sqlite:///{registry}", str(registry)):
        status, body = central.request("POST", "/api/v1/watches", {**query, "source": source})
        assert_error(status, body, 400, "source_in_home")
    # a SQLite source that does not exist is an error, not a new empty database
    missing = tmp_path / "nothing-here.db"
    status, body = central.request(
        "POST", "/api/v1/watches", {**query, "source": f"sqlite:///{missing}"}
    )
    assert status == 201 and "unable to open" in json.dumps(body["last"]), body
    assert not missing.exists()


def test_a_user_name_is_one_word_so_nobody_signs_as_a_look_alike(served):
    _local, central, _client, _v1, v2 = served
    for user in ("alice ", "../../z", "ALICE\n", ""):
        status, body = central.request(
            "POST", "/api/v1/tokens", {"user": user, "roles": ["reviewer"]}
        )
        assert status == 400, (user, body)
    # alice pushed churn:1; 'Alice' is alice for the rule that nobody signs their own
    alice = central.make_token("Alice", "reviewer")
    status, body = central.request(
        "POST", f"/api/v1/models/churn/versions/{v2}/signoffs",
        {"decision": "approve"}, token=alice,
    )  # fmt: skip
    assert_error(status, body, 403, "self_signoff")


def test_a_serving_central_is_ready_once_its_model_server_is(served):
    _local, central, *_ = served
    status, body = central.request("GET", "/api/v1/ready", token=False)
    assert (status, body) == (200, {"status": "ready", "role": "central", "model_server": "ready"})


def test_a_monitoring_run_refuses_a_now_past_centrals_clock_and_stores_nothing(served):
    _local, central, client, *_ = served
    assert client.invocations([ROW])[0] == 200  # a prediction log: churn is monitored
    path = "/api/v1/models/churn/monitor/run"
    # an hour ahead: today's hourly and daily windows would be stored as closed
    status, body = central.request("POST", path, {"now": time.time() + 3600})
    message = assert_error(status, body, 400, "now_in_future")["message"]
    assert "is later than the agent's clock (" in message and "300 s allowed for skew" in message
    stored = central.request("GET", "/api/v1/models/churn/monitor")[1]["windows"]
    assert not [w for w in stored if w["kind"] != "rolling" and w["end"] > time.time()], stored
    # and `monitor run --now` says so in its line, exit 2
    p = central.cli("monitor", "run", "churn", "--now", str(time.time() + 3600))
    assert p.returncode == 2 and p.stdout == "", p.stdout + p.stderr
    assert p.stderr.splitlines()[0].startswith("now "), p.stderr
    assert "later than the agent's clock" in p.stderr.splitlines()[0], p.stderr
    assert "Traceback" not in p.stderr
    # however far ahead (a week and more had said "between 2000-01-01 and 7 days from now")
    for far in (time.time() + 8 * 86400, 1e12):
        status, body = central.request("POST", path, {"now": far})
        assert (
            "later than the agent's clock"
            in assert_error(status, body, 400, "now_in_future")["message"]
        )
    status, body = central.request("POST", path, {"now": 5})
    message = assert_error(status, body, 400, "bad_request")["message"]
    assert message == (
        "now must be epoch seconds between 2000-01-01 and the agent's clock (300 s allowed "
        "for skew)."
    ), message
    # a clock a few seconds behind central's is no mistake
    status, body = central.request("POST", path, {"now": time.time() + 5})
    assert status == 200, body


def test_a_local_agent_relays_a_query_that_is_not_utf8_as_centrals_400(served):
    """The local agent relayed monitor, alerts and reviews by decoding the query: a byte that
    is not UTF-8 was its 500. It relays the query as sent; central answers for it."""
    local, *_ = served
    for what in ("monitor", "alerts", "reviews"):
        status, body = local.request("GET", f"/api/v1/models/churn/{what}?window=%ff")
        assert status in (200, 400), (what, status, body)
    status, body = local.request("GET", "/api/v1/models/churn/monitor?window=%ff")
    assert "Invalid unicode in window" in assert_error(status, body, 400, "bad_request")["message"]
    status, body = local.request("GET", "/api/v1/models/churn/monitor?window=daily")
    assert status == 200 and body["model"] == "churn", body


def test_a_monitoring_run_refuses_a_now_it_cannot_reach(served):
    _local, central, client, *_ = served
    assert client.invocations([ROW])[0] == 200  # a prediction log: churn is monitored
    path = "/api/v1/models/churn/monitor/run"
    for now in (0, -5):  # before 2000
        status, body = central.request("POST", path, {"now": now})
        assert "between 2000-01-01" in assert_error(status, body, 400, "bad_request")["message"]
    for now in (1e308, 253402300800):  # year 9999 and beyond: past the clock, however far
        status, body = central.request("POST", path, {"now": now})
        assert (
            "later than the agent's clock"
            in (assert_error(status, body, 400, "now_in_future")["message"])
        )
    status, body = central.request("POST", path, {"now": time.time()})
    assert status == 200, body


def test_an_output_the_model_lacks_is_a_400_naming_those_it_has(served):
    _local, _central, client, _v1, _v2 = served
    body = {
        "inputs": [
            {"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in ROW.items()
        ],
        "outputs": [{"name": "probabilities"}],
    }
    status, _, answer = client.call("POST", "/v2/models/churn/infer", body)
    error = assert_error(status, answer, 400, "unknown_output")
    assert error["message"] == "churn has no output named 'probabilities'."
    assert "predict_proba" in error["hint"], error


def test_a_canary_answering_infinity_is_rolled_back_not_baked_clean(served):
    """JSON shows NaN and infinity as null: a regressor answering them is the model's error,
    and the guardrails roll the canary back as for any error rate."""
    local, central, client, _v1, _v2 = served
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(200, 4)), columns=list("abcd"))
    y = X["a"] * 2 + X["b"]
    sane = LinearRegression().fit(X, y)
    broken = LinearRegression().fit(X, y)
    broken.coef_ = np.array([np.inf, 0.0, 0.0, 0.0])
    v1 = push_to_central(local, central, sane, "reg", X, y)
    sign(central, "reg", v1, "production")
    v2 = push_to_central(local, central, broken, "reg", X, y)
    sign(central, "reg", v2, "canary")

    def canary_answered_null():
        status, headers, body = client.invocations([ROW], model="reg")
        if headers.get("X-Handoff-Model-Version") != str(v2):
            return False
        assert status == 200 and body["predictions"] == [None], body
        return True

    until(canary_answered_null, timeout=120, what="the canary's answer")
    until(lambda: central_stage(central, "reg", v2) == "rollback", timeout=60)
    reason = central.request("GET", f"/api/v1/models/reg/versions/{v2}")[1]["stages"][-1]
    assert reason["comment"].startswith("Canary error rate"), reason


def test_a_request_the_model_runs_out_of_memory_on_is_a_413_and_it_serves_on(served):
    """hostile.Greedy asks numpy for 20 GB at every predict; a serving worker may use 4 GiB
    (its RLIMIT_AS, c.Serving.worker_memory_limit). The worker's MemoryError is the client's
    413 model_out_of_memory in the one error shape, and the worker answers the next
    request too (a 413 again, not a 503 for a dead worker)."""
    local, _central, client, _v1, _v2 = served
    rng = np.random.default_rng(2)
    X = pd.DataFrame(rng.normal(size=(100, 4)), columns=list("abcd"))
    y = (X["a"] > 0).astype(int)
    number = push_to_central(local, _central, hostile.Greedy(), "greedy", X, y)
    one = {
        "inputs": [
            {"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in ROW.items()
        ]
    }
    path = f"/v2/models/greedy/versions/{number}/infer"  # its test slot, loaded on validated

    def answered():
        status, _, body = client.call("POST", path, one)
        return status != 503 and (status, body)  # 503 while the slot loads

    status, body = until(answered, timeout=120, what="greedy's test slot answering")
    error = assert_error(status, body, 413, "model_out_of_memory")
    assert error["message"] == (
        f"greedy:{number} ran out of memory on this request (each worker may use 4096 MiB)."
    ), error
    assert error["hint"] == "Send fewer rows, or shorter values, per request.", error
    status, _, body = client.call("POST", path, one)
    assert_error(status, body, 413, "model_out_of_memory")


def test_a_version_is_archived_once(served):
    """Run last of the module: churn:2 leaves serving."""
    _local, central, _client, _v1, v2 = served
    path = f"/api/v1/models/churn/versions/{v2}/transition"
    assert central.request("POST", path, {"to": "archived"})[0] == 200
    status, body = central.request("POST", path, {"to": "archived"})
    message = assert_error(status, body, 409, "wrong_stage")["message"]
    history = central.request("GET", f"/api/v1/models/churn/versions/{v2}")[1]["stages"]
    assert [s["stage"] for s in history].count("archived") == 1
    done = history[-1]  # the second click is told who archived it, and when
    at = when_text(done["since"])
    assert message == f"churn:{v2} was archived already, by {done['by']} at {at}; " + (
        "nothing was done."
    ), message


def test_a_silent_central_is_a_503_to_retry_not_a_500(tmp_path):
    """A central that takes the connection and never answers: the local agent's relayed
    read gives up after c.CentralDestination.timeout with 503 and Retry-After."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    local = RunningAgent(
        tmp_path / "local",
        tmp_path / "rt-local",
        [
            *forwarding_args(
                None, None, url=f"http://127.0.0.1:{port}", token="t", owner=None,
                status_interval=None, backoff=None,
            ),
            "--CentralDestination.timeout=1",
        ],
    )  # fmt: skip
    local.start()
    try:
        status, headers, body = local.request_full("GET", "/api/v1/models/churn/deployment")
        assert_error(status, body, 503, "central_down")
        assert headers["Retry-After"] == "5"
        assert "not answering" in body["error"]["message"]
    finally:
        local.stop()
        silent.close()
