"""The load test against a real tornado server answering V2 infer on loopback: it counts what
the server saw, reports errors and hangs as errors, always ends, and the comparison and gate
apply the policy's [deploy] limits."""

from __future__ import annotations

import asyncio
import json
import socket

import numpy as np
import pandas as pd
import pytest
import tornado.web

from handoff_agent import loadtest
from handoff_agent.loadtest import LOADTEST_DEFAULTS, Level, LoadResult
from handoff_agent.policy import Policy


class Infer(tornado.web.RequestHandler):
    """A minimal V2 infer endpoint: checks the tensors, predicts a + b > 0."""

    def initialize(self, state: dict):
        self.state = state

    async def post(self, name):
        state = self.state
        state["requests"] += 1
        if state.get("hang"):
            await asyncio.sleep(3600)
        if state.get("fail_every") and state["requests"] % state["fail_every"] == 0:
            self.set_status(400)
            self.finish({"error": {"code": "bad_request", "message": "planned", "hint": ""}})
            return
        if state.get("close"):
            self.set_header("Connection", "close")
        body = json.loads(self.request.body)
        tensors = {t["name"]: t for t in body["inputs"]}
        state["datatypes"] = {n: t["datatype"] for n, t in tensors.items()}
        state["rows"] += tensors["a"]["shape"][0]
        a, b = np.array(tensors["a"]["data"]), np.array(tensors["b"]["data"])
        out = (a + b > 0).astype(int).tolist()
        output = {"name": "predict", "shape": [len(out)], "datatype": "INT64", "data": out}
        self.finish({"model_name": name, "outputs": [output]})


class Invocations(tornado.web.RequestHandler):
    def initialize(self, state: dict):
        self.state = state

    def post(self):
        split = json.loads(self.request.body)["dataframe_split"]
        self.state["columns"] = split["columns"]
        self.state["rows"] += len(split["data"])
        self.finish({"predictions": [0] * len(split["data"])})


@pytest.fixture
def serve():
    """``serve(**state)`` starts a real tornado server on a free loopback port in the running
    loop and returns (url, state); it is stopped when the test ends."""
    servers = []

    def start(**state):
        state = {"requests": 0, "rows": 0, **state}
        app = tornado.web.Application(
            [
                (r"/v2/models/([^/]+)/infer", Infer, {"state": state}),
                (r"/invocations", Invocations, {"state": state}),
            ]
        )
        server = app.listen(0, address="127.0.0.1")
        servers.append(server)
        port = next(iter(server._sockets.values())).getsockname()[1]
        return f"http://127.0.0.1:{port}", state

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "a": rng.normal(size=50),
            "b": rng.integers(-3, 3, size=50),
            "flag": rng.integers(0, 2, 50).astype(bool),
            "city": rng.choice(["x", "y"], 50),
        }
    )


def test_each_level_sends_its_requests_and_measures_them(serve, frame):
    async def main():
        # Given a real V2 server
        url, state = serve()
        # When the load test runs at concurrency 1, 8 and 32
        result = await loadtest.run(f"{url}/v2/models/m/infer", frame, requests=64, warmup=4)
        return result, state

    result, state = asyncio.run(main())
    # Then every level sent its requests, all answered, with sane statistics
    assert [lv.concurrency for lv in result.levels] == [1, 8, 32]
    for lv in result.levels:
        assert (lv.requests, lv.errors, lv.error_rate) == (64, 0, 0.0)
        assert 0 < lv.p50 <= lv.p99 and lv.throughput > 0
    assert state["requests"] == state["rows"] == 3 * (64 + 4)
    # And one tensor per column, with V2 datatypes from the dtypes
    assert state["datatypes"] == {"a": "FP64", "b": "INT64", "flag": "BOOL", "city": "BYTES"}
    assert LoadResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_candidate_and_production_in_one_run_are_compared_and_gated(serve, frame):
    async def main():
        # Given production answering every request and a candidate failing one in five
        production, prod_state = serve()
        candidate, cand_state = serve(fail_every=5)
        # When the deploy test runs both in one run
        out = await loadtest.run_pair(
            f"{candidate}/v2/models/m/infer",
            f"{production}/v2/models/m/infer",
            frame,
            Policy(),
            levels=(1, 8),
            requests=30,
            warmup=0,
        )
        return out, prod_state, cand_state

    out, prod_state, cand_state = asyncio.run(main())
    # Then each side was loaded at each level, the ratios are there and the gate failed
    assert prod_state["requests"] == cand_state["requests"] == 60
    assert [lv["concurrency"] for lv in out["candidate"]["levels"]] == [1, 8]
    assert [lv["concurrency"] for lv in out["production"]["levels"]] == [1, 8]
    assert out["comparison"]["levels"]["8"]["p99_ratio"] > 0
    assert out["comparison"]["worst"]["error_rate"] == 0.2
    assert out["gate"]["verdict"] == "fail" and "error rate 20.00%" in out["gate"]["reasons"][0]
    assert "max_error_rate" in out["gate"]["failed"]  # the policy key, for the 409
    json.dumps(out)


def test_failed_requests_count_as_errors_and_fail_the_gate(serve, frame):
    async def main():
        url, _ = serve(fail_every=4)
        return await loadtest.run(
            f"{url}/v2/models/m/infer", frame, levels=(1, 8), requests=40, warmup=0
        )

    result = asyncio.run(main())
    for lv in result.levels:
        assert lv.errors == 10 and lv.error_rate == 0.25
        assert lv.first_error.startswith("HTTP 400: ") and "planned" in lv.first_error
    verdict = loadtest.gate(loadtest.compare(result, None), Policy())
    assert verdict["verdict"] == "fail"
    assert "error rate 25.00% is over max_error_rate 1.00%" in verdict["reasons"][0]
    assert verdict["notes"] == ["no production to compare with"]


def test_a_server_that_never_answers_ends_the_level_with_errors(serve, frame):
    async def main():
        url, _ = serve(hang=True)
        return await loadtest.run(
            f"{url}/v2/models/m/infer",
            frame,
            levels=(2,),
            requests=4,
            warmup=0,
            timeout=0.3,
        )

    result = asyncio.run(main())
    (lv,) = result.levels
    assert (lv.requests, lv.errors, lv.p50) == (4, 4, None)
    assert lv.first_error == "no answer within 0.3 s"


def test_a_server_closing_each_connection_is_reconnected(serve, frame):
    async def main():
        url, state = serve(close=True)
        result = await loadtest.run(
            f"{url}/v2/models/m/infer", frame, levels=(4,), requests=20, warmup=0
        )
        return result, state

    result, state = asyncio.run(main())
    assert result.levels[0].errors == 0 and state["requests"] == 20


def test_nothing_listening_is_an_error_not_a_crash(frame):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    result = asyncio.run(
        loadtest.run(
            f"http://127.0.0.1:{port}/v2/models/m/infer",
            frame,
            levels=(1,),
            requests=3,
            warmup=0,
        )
    )
    assert result.levels[0].errors == 3
    assert "ConnectionRefusedError" in result.levels[0].first_error


def test_mlflow_invocations_protocol(serve, frame):
    async def main():
        url, state = serve()
        result = await loadtest.run(
            f"{url}/invocations",
            frame,
            protocol="invocations",
            levels=(1,),
            requests=5,
            warmup=0,
            batch=3,
        )
        return result, state

    result, state = asyncio.run(main())
    assert result.levels[0].errors == 0
    assert state["columns"] == ["a", "b", "flag", "city"] and state["rows"] == 15


def test_worker_memory_is_reported(serve, frame):
    import os

    async def main():
        url, _ = serve()
        return await loadtest.run(
            f"{url}/v2/models/m/infer",
            frame,
            levels=(1,),
            requests=3,
            warmup=0,
            worker_pids=lambda: [os.getpid()],
        )

    assert asyncio.run(main()).levels[0].memory_per_worker > 1 << 20


def _result(*levels: tuple[int, float, float, float, float]) -> LoadResult:
    return LoadResult(
        "http://x/",
        "v2",
        1,
        [Level(c, 100, int(e * 100), 1.0, p50, p99, tp, e) for c, p50, p99, tp, e in levels],
    )


def test_compare_takes_the_worst_level_and_the_gate_applies_each_limit():
    production = _result((1, 0.001, 0.002, 900, 0.0), (8, 0.002, 0.004, 2000, 0.0))
    candidate = _result((1, 0.001, 0.003, 800, 0.0), (8, 0.003, 0.010, 900, 0.0))
    cmp = loadtest.compare(candidate, production)
    assert cmp["levels"]["8"]["p99_ratio"] == pytest.approx(2.5)
    assert cmp["worst"]["p99_ratio"] == pytest.approx(2.5)
    assert cmp["worst"]["throughput_ratio"] == pytest.approx(0.45)

    verdict = loadtest.gate(cmp, {"p99_slack_ms": 0})  # ms: see below
    assert verdict["verdict"] == "fail"
    assert [r.split(" ")[0] for r in verdict["reasons"]] == ["p99", "throughput"]
    lenient = {"max_p99_ratio": 3, "min_throughput_ratio": 0.4, "p99_slack_ms": 0}
    assert loadtest.gate(cmp, lenient)["verdict"] == "pass"
    assert loadtest.gate(loadtest.compare(candidate, candidate), None)["verdict"] == "pass"
    # A p99 past what the ratio allows (2 x 4 ms) by less than p99_slack_ms (a busy
    # machine's jitter) passes: 10 ms is 2 ms past 8 ms
    level = cmp["levels"]["8"]
    assert (level["p99_ms"], level["production_p99_ms"]) == pytest.approx((10.0, 4.0))
    slack = {"min_throughput_ratio": 0.4, "p99_slack_ms": 2.5}
    assert loadtest.gate(cmp, slack)["verdict"] == "pass"
    strict = loadtest.gate(cmp, {**slack, "p99_slack_ms": 1.5})
    assert strict["reasons"] == ["p99 is 2.50x production's, over max_p99_ratio 2 (by 2.0 ms)"]


def test_settings_come_from_the_deploy_loadtest_table_in_any_shape():
    # No policy, or one without [deploy] (this branch's Policy): the defaults.
    assert loadtest.settings(None) == {**LOADTEST_DEFAULTS, "concurrency": (1, 8, 32)}
    assert loadtest.settings(Policy()) == loadtest.settings(None)
    # [deploy] as a parsed TOML table: only its loadtest sub-table counts; the canary's own
    # max_p99_ratio at the top of [deploy] is another limit.
    deploy = {"max_p99_ratio": 1.5, "loadtest": {"max_p99_ratio": 3, "concurrency": [2, 4]}}
    got = loadtest.settings(deploy)
    assert (got["max_p99_ratio"], got["concurrency"], got["requests"]) == (3, (2, 4), 500)
    # The table itself, as a mapping.
    assert loadtest.settings({"max_error_rate": 0.5})["max_error_rate"] == 0.5


def test_a_policy_file_sets_the_load_test_gate(tmp_path):
    """With the guardrails' [deploy] declaration (deploy_policy.py), a real policy file."""
    pytest.importorskip("handoff_agent.deploy_policy")
    path = tmp_path / "policy.toml"
    path.write_text("[deploy.loadtest]\nmax_p99_ratio = 3.0\nconcurrency = [1, 4]\n")
    got = loadtest.settings(Policy.load(path))
    assert (got["max_p99_ratio"], got["concurrency"]) == (3.0, (1, 4))
    assert got["min_throughput_ratio"] == LOADTEST_DEFAULTS["min_throughput_ratio"]


def test_bad_arguments_are_refused_before_any_request(frame):
    with pytest.raises(ValueError, match="http://"):
        asyncio.run(loadtest.run("ftp://127.0.0.1/x", frame))
    with pytest.raises(ValueError, match="protocol"):
        loadtest.bodies(frame, "grpc")
    with pytest.raises(ValueError, match="at least one row"):
        loadtest.bodies(frame.iloc[:0])
