"""The deployment view, live, through the local agent: a traffic change at central arrives on
the local agent's ``/api/v1/models/NAME/deployment/events``, relayed with the local agent's
own central token (never shown), and the relay says when central is lost and comes back.
Real agents over HTTP; central restarts on the same port with the same token."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import numpy as np
import pandas as pd
import pytest
from serving_support import push_to_central, sign, start_pair
from sklearn.linear_model import LogisticRegression
from support import RunningAgent, until

assert RunningAgent  # this module starts agents: conftest runs it on every backend
TOKEN = "central-events-token-8fQ2mZr7XkL4pWn9"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stream:
    """An SSE client of an agent, reading in a thread: every event, and the raw bytes."""

    def __init__(self, agent, path: str, headers=None):
        self.events: list[tuple[str, dict]] = []
        self.raw = b""
        self.conn = http.client.HTTPConnection(agent.host, agent.port, timeout=120)
        self.conn.request(
            "GET", path, headers={"Authorization": f"token {agent.token}", **(headers or {})}
        )
        self.resp = self.conn.getresponse()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        kind, data = "message", []
        try:
            for line in iter(self.resp.readline, b""):
                self.raw += line
                text = line.decode().rstrip("\r\n")
                if text.startswith("event:"):
                    kind = text[6:].strip()
                elif text.startswith("data:"):
                    data.append(text[5:].strip())
                elif not text and data:
                    self.events.append((kind, json.loads("\n".join(data))))
                    kind, data = "message", []
        except (OSError, ValueError, AttributeError):  # closed under the reader by close()
            pass

    def wait(self, test, what: str, timeout: float = 90):
        return until(
            lambda: next((e for e in self.events if test(*e)), None), timeout=timeout, what=what
        )

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory, backend):
    port = free_port()
    local, central = start_pair(
        tmp_path_factory.mktemp("events"), ["--port", str(port), f"--HandoffAgent.token={TOKEN}"]
    )
    try:
        yield local, central
    finally:
        local.stop()
        central.stop()


def test_a_traffic_change_at_central_arrives_on_the_local_agents_stream(pair):
    local, central = pair
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 4)), columns=list("abcd"))
    y = (X["a"] + X["b"] > 0).astype(int)
    one = push_to_central(local, central, LogisticRegression().fit(X, y), "churn", X, y)
    sign(central, "churn", one, "production")
    two = push_to_central(local, central, LogisticRegression(C=0.1).fit(X, y), "churn", X, y)

    stream = Stream(local, "/api/v1/models/churn/deployment/events")
    try:
        assert stream.resp.status == 200
        assert stream.resp.getheader("Content-Type") == "text/event-stream"
        stream.wait(lambda k, d: k == "central" and d["state"] == "connected", "relay open")

        # A stage change and a traffic change at central: both arrive, for this model only
        sign(central, "churn", two, "canary")
        stream.wait(lambda k, d: k == "stage" and d.get("stage") == "canary", "canary stage")
        path = "/api/v1/models/churn/deployment/traffic"
        status, body = central.request("POST", path, {"percent": 40})
        assert status == 200, body
        event = stream.wait(lambda k, d: k == "deployment" and d.get("canary") == 40, "traffic")
        assert event[1]["model"] == "churn" and event[1]["by"]
        assert all(d.get("model") == "churn" for k, d in stream.events if k != "central")
        assert {k for k, _ in stream.events} <= {
            "central",
            "stage",
            "deployment",
            "guardrail",
            "validation",
            "alert",
        }

        # Central goes away: the relay says so and keeps the client's stream open; once
        # central is back, it opens the stream again by itself
        central.stop()
        down = stream.wait(lambda k, d: k == "central" and d["state"] == "down", "central lost")
        assert down[1]["reason"]
        seen = stream.events.index(down) + 1
        central.start()
        until(
            lambda: any(
                k == "central" and d["state"] == "connected" for k, d in stream.events[seen:]
            ),
            timeout=60,
            what="the relay open again",
        )
        status, body = central.request("POST", path, {"percent": 10})
        assert status == 200, body
        stream.wait(lambda k, d: k == "deployment" and d.get("canary") == 10, "after restart")
        time.sleep(0.2)
        assert TOKEN.encode() not in stream.raw and b"Authorization" not in stream.raw
    finally:
        stream.close()


def test_the_route_at_central_and_its_errors(pair):
    local, central = pair
    # At central: its own bus, the same route (only this model's deployment events)
    stream = Stream(central, "/api/v1/models/churn/deployment/events")
    try:
        assert stream.resp.status == 200
        status, body = central.request(
            "POST", "/api/v1/models/churn/deployment/traffic", {"percent": 20}
        )
        assert status == 200, body
        stream.wait(lambda k, d: k == "deployment" and d.get("canary") == 20, "central's own")
        assert not any(k == "central" for k, _ in stream.events)
    finally:
        stream.close()
    # A bad name is the one JSON error shape, before any stream starts
    status, body = local.request("GET", "/api/v1/models/bad%20name/deployment/events")
    assert status == 400 and set(body) == {"error"}, body


def test_an_unknown_model_is_a_404_naming_it_before_any_stream_starts(pair, tmp_path):
    local, central = pair
    # Given a model neither agent knows (a typo), at central and through the local agent
    for agent in (central, local):
        conn = http.client.HTTPConnection(agent.host, agent.port, timeout=30)
        try:
            conn.request(
                "GET",
                "/api/v1/models/chrun/deployment/events",
                headers={"Authorization": f"token {agent.token}"},
            )
            resp = conn.getresponse()
            # then the answer is the one JSON error, naming the model, and it ends
            assert resp.status == 404, agent.role
            assert resp.getheader("Content-Type").startswith("application/json")
            body = json.loads(resp.read())
            assert set(body) == {"error"} and body["error"]["code"] == "not_found", body
            assert "'chrun'" in body["error"]["message"], body
        finally:
            conn.close()
    # A model central only monitors (an imported log, no version) has a stream there
    log = pd.DataFrame({"a": [0.5] * 5, "prediction": [1] * 5, "time": time.time() - 60.0})
    log.to_parquet(tmp_path / "log.parquet")
    p = central.cli("monitor", "import", "imported", str(tmp_path / "log.parquet"))
    assert p.returncode == 0, p.stdout + p.stderr
    for agent in (central, local):
        stream = Stream(agent, "/api/v1/models/imported/deployment/events")
        try:
            assert stream.resp.status == 200, agent.role
            assert stream.resp.getheader("Content-Type") == "text/event-stream"
        finally:
            stream.close()
    # and its deployment, which it has none of, says why rather than that no such model
    # exists (the inventory lists it)
    p = central.cli("deployment", "imported")
    assert p.returncode == 1 and p.stdout == "", p.stdout + p.stderr
    assert p.stderr.splitlines()[0] == (
        "'imported' is known here only from an imported prediction log: it serves elsewhere, "
        "with no versions or deployment here."
    ), p.stderr
