"""The model server at central, end to end: real agents, real HTTP, sandboxed workers.

A model goes notebook → local agent → central, is signed off to production, and serves
over V2 and /invocations; a second version goes through test, canary and production under
load, and is rolled back; a worker is killed under load. Runs on both metadata backends.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import time
import urllib.parse

import numpy as np
import pandas as pd
import pytest
from serving_support import (
    Client,
    Load,
    central_stage,
    descendants,
    get_bytes,
    push_to_central,
    serving_url,
    sign,
    start_pair,
    status_json,
)
from sklearn.linear_model import LogisticRegression
from support import RunningAgent, send_until_answered, until
from tornado import web

from handoff_agent.serving.handlers import routes
from handoff_agent.vocabulary import when_text

ROW = {"a": 0.5, "b": -1.0, "c": 2.0, "d": 0.0}
assert RunningAgent  # this module starts agents: conftest runs it on every backend


def assert_error(status, body, expected_status, code=None):
    assert status == expected_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "hint"}, body
    if code is not None:
        assert body["error"]["code"] == code, body


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(400, 4)), columns=list("abcd"))
    y = (X["a"] + X["b"] > 0).astype(int)
    return X, y


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, backend, data):
    """Central serving churn:1 in production; the local agent beside it."""
    X, y = data
    # two serving workers, as by default: one is killed under load, the other answers
    local, central = start_pair(tmp_path_factory.mktemp("serving"), ["--Serving.workers=2"])
    try:
        number = push_to_central(local, central, LogisticRegression().fit(X, y), "churn", X, y)
        sign(central, "churn", number, "production")
        client = Client(serving_url(central), central.token)
        seen = []  # what a caller got while churn:1's first workers started

        def answered():
            status, headers, body = client.invocations([ROW])
            code = body["error"]["code"] if status != 200 else None
            seen.append((status, code, headers.get("Retry-After")))
            return status == 200

        until(answered, timeout=120, what="churn:1 serving", every=0.02)
        yield local, central, client, seen
    finally:
        local.stop()
        central.stop()


def test_a_first_version_still_loading_is_503_with_retry_after_not_404(deployed):
    """A load balancer retries a 503 and drops a 404: while a model's first workers start
    (its test slot, as central validates it), a caller is told to retry, never that the
    model is not served."""
    *_, seen = deployed
    loading = [s for s in seen if s[0] == 503]
    assert loading and all(s == (503, "unavailable", "1") for s in loading), seen
    # and once signed off to production, a routed request finds it: the server reads the
    # slot table when a request finds nothing to route to, not only at its next poll
    assert {s[:2] for s in seen} <= {(503, "unavailable"), (200, None)}, seen


def test_v2_and_invocations_name_the_version_and_status_shows_the_url(deployed, data):
    _local, central, client, _seen = deployed
    X, _ = data
    assert status_json(central)["serving_url"] == serving_url(central)
    assert client.call("GET", "/v2/health/live", token=False)[0] == 200
    assert client.call("GET", "/v2/health/ready", token=False)[2] == {"ready": True}

    # V2: one tensor per column
    rows = X.head(3)
    inputs = [
        {"name": c, "shape": [3], "datatype": "FP64", "data": rows[c].tolist()} for c in X.columns
    ]
    status, headers, body = client.call("POST", "/v2/models/churn/infer", {"inputs": inputs})
    assert status == 200, body
    assert headers["X-Handoff-Model-Version"] == "1" and body["model_version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["predict"]["shape"] == [3]
    assert outputs["predict_proba"]["shape"] == [3, 2]

    # MLflow /invocations, four input formats, one answer
    split = {"columns": list(X.columns), "data": rows.values.tolist()}
    answers = []
    for payload in (
        {"dataframe_split": split},
        {"dataframe_records": rows.to_dict("records")},
        {"instances": rows.values.tolist()},
        {"inputs": {c: rows[c].tolist() for c in X.columns}},
    ):
        status, headers, body = client.call("POST", "/invocations", payload)
        assert status == 200, (payload, body)
        assert headers["X-Handoff-Model-Version"] == "1"
        answers.append(body["predictions"])
    assert all(a == answers[0] for a in answers)
    assert answers[0] == outputs["predict"]["data"]

    # Metadata lists the recorded signature, the outputs an answer has, the classes' order
    meta = client.call("GET", "/v2/models/churn")[2]
    assert [i["name"] for i in meta["inputs"]] == list("abcd")
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
    ]
    assert meta["parameters"] == {"classes": [0, 1]}


BAD = [
    # (what, path, body or raw bytes, status, code)
    ("not JSON", "/invocations?model=churn", b"{nope", 400, None),
    ("no format key", "/invocations?model=churn", {"rows": []}, 400, "malformed_body"),
    (
        "two format keys",
        "/invocations?model=churn",
        {"instances": [], "inputs": []},
        400,
        "malformed_body",
    ),
    (
        "unknown column",
        "/invocations?model=churn",
        {"dataframe_records": [{**ROW, "zzz": 1}]},
        422,
        "unknown_columns",
    ),
    (
        "missing column",
        "/invocations?model=churn",
        {"dataframe_records": [{"a": 1, "b": 2, "c": 3}]},
        422,
        "missing_columns",
    ),
    (
        "wrong dtype",
        "/invocations?model=churn",
        {"dataframe_records": [{**ROW, "b": "high"}]},
        422,
        "wrong_dtype",
    ),
    (
        "NaN",
        "/invocations?model=churn",
        {"dataframe_records": [{**ROW, "c": None}]},
        422,
        "nan_not_allowed",
    ),
    (
        "ragged rows",
        "/invocations?model=churn",
        {"dataframe_split": {"columns": list("abcd"), "data": [[1, 2, 3]]}},
        400,
        "malformed_body",
    ),
    (
        "too many rows",
        "/invocations?model=churn",
        {"inputs": {c: [0.0] * 10_001 for c in "abcd"}},
        413,
        "too_many_rows",
    ),
    (
        "no rows",
        "/invocations?model=churn",
        {"inputs": {c: [] for c in "abcd"}},
        400,
        "malformed_body",
    ),
    (
        "unknown model",
        "/invocations?model=other",
        {"instances": [[1, 2, 3, 4]]},
        404,
        "model_not_served",
    ),
    (
        "unserved version",
        "/v2/models/churn/versions/9/infer",
        {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}]},
        404,
        "version_not_served",
    ),
    (
        "V2 shape/data mismatch",
        "/v2/models/churn/infer",
        {"inputs": [{"name": c, "shape": [2], "datatype": "FP64", "data": [1.0]} for c in "abcd"]},
        400,
        "malformed_body",
    ),
    (
        "V2 datatype vs values",
        "/v2/models/churn/infer",
        {"inputs": [{"name": c, "shape": [1], "datatype": "INT64", "data": [1.5]} for c in "abcd"]},
        422,
        "wrong_dtype",
    ),
    (
        "V2 unknown datatype",
        "/v2/models/churn/infer",
        {"inputs": [{"name": "a", "shape": [1], "datatype": "FP128", "data": [1]}]},
        400,
        None,
    ),
    ("V2 no inputs", "/v2/models/churn/infer", {"inputs": []}, 400, "malformed_body"),
]


def test_bad_inputs_get_a_json_4xx_and_the_worker_keeps_serving(deployed):
    _local, _central, client, _seen = deployed
    for what, path, body, status, code in BAD:
        raw = body if isinstance(body, bytes) else None
        got, _, answer = client.call(
            "POST",
            path,
            None if raw else body,
            {"Content-Type": "application/json"} if raw else None,
            raw=raw,
        )
        assert 400 <= got < 500, what
        assert_error(got, answer, status, code)
    assert client.call("POST", "/invocations?model=churn", {"instances": [[1, 2]] * 2})[0] == 400
    # A hint fits the protocol asked: no MLflow formats for an Open Inference Protocol request
    empty = {"inputs": [{"name": c, "shape": [0], "datatype": "FP64", "data": []} for c in "abcd"]}
    got, _, answer = client.call("POST", "/v2/models/churn/infer", empty)
    assert got == 400 and answer["error"]["hint"] == "Send at least one row to predict.", answer
    # Every route of the model server but health needs a token (enumerated, not listed)
    for pattern, handler, *_ in routes():
        path = re.sub(
            r"\(\?P<(\w+)>[^)]*\)", lambda m: "1" if m[1] == "number" else "churn", pattern
        )
        for method in ("GET", "POST"):
            if getattr(handler, method.lower()) is getattr(web.RequestHandler, method.lower()):
                continue
            status, _, body = client.call(
                method, path, {} if method == "POST" else None, token=False
            )
            if handler.public:
                assert status in (200, 503), (path, body)
            else:
                assert_error(status, body, 401, "unauthorized")
    assert client.invocations([ROW])[0] == 200  # no worker died on the way


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_body_over_the_limit_is_413_before_it_is_read(deployed, chunked):
    """A client streaming rows (curl -T, a proxy) sends no length: it gets the same JSON 413
    as one that declares it, once past the limit, not tornado's bare 400."""
    _local, central, client, _seen = deployed
    url = urllib.parse.urlsplit(serving_url(central))
    total = (32 << 20) + (8 << 20)  # c.Serving.max_body_bytes is 32 MiB
    head = [
        "POST /invocations?model=churn HTTP/1.1",
        f"Host: {url.netloc}",
        f"Authorization: token {central.token}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}",
    ]
    request_head = ("\r\n".join(head) + "\r\n\r\n").encode()
    status, body, sent = send_until_answered(
        (url.hostname, url.port), request_head, total, chunked=chunked
    )
    assert_error(status, body, 413, "too_large")
    assert "larger than the model server's limit of 33554432 bytes" in body["error"]["message"]
    assert sent < total
    assert client.invocations([ROW])[0] == 200


def test_consumer_token_feedback_and_the_prediction_log(deployed):
    _local, central, client, _seen = deployed
    out = central.cli("token", "create", "--role", "consumer", "--models", "churn", "--user", "app")
    assert out.returncode == 0, out.stdout + out.stderr
    app = out.stdout.strip().splitlines()[-1]

    status, headers, _ = client.invocations([ROW], **{"Authorization": f"token {app}"})
    assert status == 200
    request_id = headers["X-Request-ID"]
    # A consumer reaches only its models, and none of the agent's other routes
    status, _, body = client.invocations([ROW], model="fraud", Authorization=f"token {app}")
    assert_error(status, body, 403, "model_not_allowed")
    assert_error(*central.request("GET", "/api/v1/models", token=app), 403, "forbidden_role")
    # Without ?model=, a token scoped elsewhere is neither given churn nor told it is served
    out = central.cli("token", "create", "--role", "consumer", "--models", "fraud", "--user", "f")
    other = out.stdout.strip().splitlines()[-1]
    rows = {"dataframe_records": [ROW]}
    status, _, body = client.call("POST", "/invocations", rows, token=other)
    assert_error(status, body, 400, "model_required")
    assert "churn" not in json.dumps(body)

    # Ground truth arrives later, by request id, from the consumer
    labels = {"labels": [{"request_id": request_id, "label": 1}]}
    status, body = central.request("POST", "/api/v1/models/churn/feedback", labels, token=app)
    assert (status, body) == (201, {"model": "churn", "labels": 1})
    stored = central.sql("SELECT request_id, label FROM feedback WHERE model = 'churn'")
    assert stored == [{"request_id": request_id, "label": "1"}]
    # Labels that cannot score a 0/1 model are refused, with nothing stored: words, objects,
    # NaN; and labels for a model central does not know
    for label, says in (
        ("yes", "but the model predicts numbers"),
        ({"v": 1}, "a label is a number, a text"),
        (float("nan"), "a label is a number, a text"),
    ):
        bad = {"labels": [{"request_id": request_id, "label": label}]}
        status, body = central.request("POST", "/api/v1/models/churn/feedback", bad, token=app)
        assert status == 400 and says in body["error"]["message"], body
    status, body = central.request("POST", "/api/v1/models/nosuch/feedback", labels)
    assert status == 404, body
    # Labels decide live performance and rollbacks: an analyst's token sends none, and
    # another application cannot replace this one's (an admin can: the agent's token)
    tokens = {}
    for user, role in (("bob", "analyst"), ("shop", "consumer")):
        args = ["--role", role, "--user", user] + (
            ["--models", "churn"] if role == "consumer" else []
        )
        tokens[user] = central.cli("token", "create", *args).stdout.strip().splitlines()[-1]
    flipped = {"labels": [{"request_id": request_id, "label": 0}]}
    status, body = central.request(
        "POST", "/api/v1/models/churn/feedback", flipped, token=tokens["bob"]
    )
    assert_error(status, body, 403, "forbidden_role")
    status, body = central.request(
        "POST", "/api/v1/models/churn/feedback", flipped, token=tokens["shop"]
    )
    assert_error(status, body, 409, "labelled_by_another")
    assert "labelled by app" in body["error"]["message"], body
    assert central.sql("SELECT label, by FROM feedback") == [{"label": "1", "by": "app"}]
    status, _ = central.request("POST", "/api/v1/models/churn/feedback", labels)  # the admin
    assert status == 201 and len(central.sql("SELECT id FROM feedback")) == 1
    # ...and joins its prediction in the stats the guardrails read (live performance)
    until(
        lambda: (
            next(
                s["labelled"]
                for s in central.request("GET", "/api/v1/models/churn/deployment")[1]["slots"]
                if s["slot"] == "production"
            )
            == 1
        ),
        timeout=30,
        what="the label joined",
    )

    # The log is Parquet, on the blob store (files or S3), with the request in it
    status, raw = get_bytes(central, "/api/v1/models/churn/predictions")
    assert status == 200, raw[:300]
    log = pd.read_parquet(io.BytesIO(raw))
    row = log[log["request_id"] == request_id].iloc[0]
    assert (row["model"], row["version"], row["slot"]) == ("churn", 1, "production")
    assert json.loads(row["inputs"]) == {k: [v] for k, v in ROW.items()}
    assert json.loads(row["outputs"])["predict"] in ([0], [1])
    assert {"latency_ms", "time", "status"} <= set(log.columns)


def test_tritonclient_works_against_the_endpoint(deployed, data):
    httpclient = pytest.importorskip("tritonclient.http")
    _local, central, _client, _seen = deployed
    X, _ = data
    auth = {"Authorization": f"token {central.token}"}
    triton = httpclient.InferenceServerClient(serving_url(central).split("//")[1])
    try:
        assert triton.is_server_live()
        assert triton.is_model_ready("churn", headers=auth)
        meta = triton.get_model_metadata("churn", headers=auth)
        assert [i["name"] for i in meta["inputs"]] == list("abcd")
        inputs = []
        for col in X.columns:
            arr = X[col].head(5).to_numpy(dtype=np.float64)
            tensor = httpclient.InferInput(col, [5], "FP64")
            tensor.set_data_from_numpy(arr)  # the binary-data extension, tritonclient's default
            inputs.append(tensor)
        result = triton.infer("churn", inputs, headers=auth)
        assert result.get_response()["model_version"] == "1"
        assert result.as_numpy("predict").shape == (5,)
        assert result.as_numpy("predict_proba").shape == (5, 2)
    finally:
        triton.close()


def test_stages_move_traffic_promotion_and_rollback_under_load_lose_nothing(deployed, data):
    local, central, client, _seen = deployed
    X, y = data
    # A second version: validated puts it in the test slot, reachable only by version
    v2 = push_to_central(local, central, LogisticRegression(C=0.01).fit(X, y), "churn", X, y)
    test_infer = f"/v2/models/churn/versions/{v2}/infer"
    one = {
        "inputs": [
            {"name": c, "shape": [1], "datatype": "FP64", "data": [v]} for c, v in ROW.items()
        ]
    }
    until(lambda: client.call("POST", test_infer, one)[0] == 200, timeout=120, what="test slot")
    assert client.call("POST", test_infer, one)[1]["X-Handoff-Slot"] == "test"
    assert {client.invocations([ROW])[1]["X-Handoff-Model-Version"] for _ in range(30)} == {"1"}

    # Approved, with the policy's shadow: mirrored copies, answered by production only
    sign(central, "churn", v2, "approved")

    def shadow_requests():
        view = central.request("GET", "/api/v1/models/churn/deployment")[1]
        slots = {s["slot"]: s for s in view["slots"]}
        answers = {client.invocations([ROW])[1]["X-Handoff-Model-Version"] for _ in range(5)}
        assert answers == {"1"}
        return "shadow" in slots and slots["shadow"].get("agreement") is not None and view

    view = until(shadow_requests, timeout=60, what="mirrored requests compared")
    # Agreement with production's answers is reported, in the slot and in the shadow report
    shadow = next(s for s in view["slots"] if s["slot"] == "shadow")
    assert shadow["requests"] > 0 and 0.0 <= shadow["agreement"] <= 1.0
    report = view["guardrails"]["shadow"]
    assert report["requests"] == shadow["requests"] and report["gates"] is False

    # Canary at the policy's 30 %, sticky per key
    sign(central, "churn", v2, "canary")
    until(
        lambda: any(
            client.invocations([ROW])[1]["X-Handoff-Model-Version"] == str(v2) for _ in range(20)
        ),
        timeout=120,
        what="canary traffic",
    )
    served = [client.invocations([ROW])[1]["X-Handoff-Model-Version"] for _ in range(400)]
    assert 15 <= 100 * served.count(str(v2)) / len(served) <= 45, served.count(str(v2))
    for key in ("k1", "k2", "k3", "k4"):
        got = {
            client.invocations([ROW], **{"X-Handoff-Key": key})[1]["X-Handoff-Model-Version"]
            for _ in range(15)
        }
        assert len(got) == 1, (key, got)

    def canary_stats():
        # stored at the next guardrail tick (a second), not per request, and counted from the
        # first stats slice that starts after the canary did (the one it started in holds
        # requests from before): traffic goes on while we wait
        client.invocations([ROW])
        view = central.request("GET", "/api/v1/models/churn/deployment")[1]
        slots = {s["slot"]: s for s in view["slots"]}
        return slots if slots["canary"]["requests"] > 0 else None

    slots = until(canary_stats, timeout=60, what="the canary's requests in its stats")
    assert (slots["canary"]["version"], slots["canary"]["traffic"]) == (v2, 30.0)
    assert slots["production"]["traffic"] == 70.0 and slots["production"]["requests"] > 0
    assert slots["canary"]["p99_ms"] is not None and slots["canary"]["backend"] == "skops"
    # The shadow was reported while it ran; the canary baked clean (the policy's 20 requests)
    shadowed = central.sql(
        "SELECT state FROM guardrail_events WHERE model = 'churn' AND slot = 'shadow'"
    )
    assert shadowed, "no shadow report was recorded"
    until(
        lambda: (
            client.invocations([ROW])
            and central.request("GET", "/api/v1/models/churn/deployment")[1]["guardrails"][
                "canary"
            ]["state"]
            == "promote_ready"
        ),
        timeout=60,
        what="a clean bake",
    )

    # Promotion with requests in flight: none fails, and the new version takes everything
    with Load(client, ROW) as load:
        time.sleep(0.5)
        sign(central, "churn", v2, "production")
        until(
            lambda: load.outcomes and load.outcomes[-1][1] == str(v2),
            timeout=120,
            what="v2 in production",
        )
        time.sleep(0.5)
    assert load.failed() == [] and len(load.outcomes) > 20
    assert central_stage(central, "churn", 1) == "archived"
    slots = {
        s["slot"]: s for s in central.request("GET", "/api/v1/models/churn/deployment")[1]["slots"]
    }
    assert (slots["production"]["version"], slots["previous"]["version"]) == (v2, 1)

    # Rollback (admin) in one step, under load: version 1 serves again, nothing fails
    with Load(client, ROW) as load:
        time.sleep(0.5)
        status, body = central.request(
            "POST", "/api/v1/models/churn/deployment/rollback", {"comment": "worse"}
        )
        assert status == 200, body
        assert {s["slot"]: s["version"] for s in body["slots"]} == {"production": 1}
        time.sleep(1.0)
    assert load.failed() == []
    assert load.outcomes[-1][1] == "1"
    assert (central_stage(central, "churn", 1), central_stage(central, "churn", v2)) == (
        "production",
        "rollback",
    )

    # A second rollback of v2 after the first committed (a double click, a second admin
    # answering the same alarm) names the version it saw: a 409 saying who rolled it back and
    # when, and churn:1 keeps production with all the traffic
    status, body = central.request(
        "POST",
        "/api/v1/models/churn/deployment/rollback",
        {"version": v2, "comment": "me too"},
    )
    assert status == 409 and body["error"]["code"] == "wrong_stage", body
    done = central.request("GET", f"/api/v1/models/churn/versions/{v2}")[1]["stages"][-1]
    assert body["error"]["message"] == (
        f"churn:{v2} was rolled back already, by {done['by']} at "
        f"{when_text(done['since'])} ('worse'); "
        "nothing was done."
    ), body
    view = central.request("GET", "/api/v1/models/churn/deployment")[1]
    assert {s["slot"]: (s["version"], s["traffic"]) for s in view["slots"]} == {
        "production": (1, 100.0)
    }, view
    assert (central_stage(central, "churn", 1), central_stage(central, "churn", v2)) == (
        "production",
        "rollback",
    )
    assert client.invocations([ROW])[1]["X-Handoff-Model-Version"] == "1"
    # a version that is not a version number is the caller's mistake, not a rollback of
    # what serves
    for bad in ("1", 0, 10**30, True):
        status, body = central.request(
            "POST", "/api/v1/models/churn/deployment/rollback", {"version": bad}
        )
        assert status == 400 and body["error"]["code"] == "bad_request", (bad, body)
    assert central_stage(central, "churn", 1) == "production"
    assert central.cli("audit", "verify").returncode == 0


def test_kill9_of_a_worker_under_load_restarts_it_and_fails_no_request(deployed):
    _local, central, client, _seen = deployed

    def production():
        view = central.request("GET", "/api/v1/models/churn/deployment")[1]
        return next(s for s in view["slots"] if s["slot"] == "production")

    before = production()
    assert before["worker_pids"], before
    with Load(client, ROW) as load:
        time.sleep(0.5)
        for pid in [before["worker_pids"][0], *descendants(before["worker_pids"][0])][::-1]:
            # the worker's Python first, then its sandbox, which may have ended with it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        until(
            lambda: production()["restarts"] >= 1 and production()["workers"] == 2,
            timeout=120,
            what="a restarted worker",
        )
        time.sleep(0.5)
    assert load.failed() == [], load.failed()[:5]
    assert before["worker_pids"][0] not in production()["worker_pids"]
    assert central.healthy()
