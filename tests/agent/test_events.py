"""Server-sent events: each result is published as it is committed, filterable by model."""

from __future__ import annotations

import http.client
import json
import threading

from support import bundle_bytes


def follow(agent, query: str, events: list, stop: threading.Event) -> threading.Thread:
    def run():
        conn = http.client.HTTPConnection(agent.host, agent.port, timeout=60)
        conn.request(
            "GET", f"/api/v1/events?{query}", headers={"Authorization": f"token {agent.token}"}
        )
        resp = conn.getresponse()
        assert resp.getheader("Content-Type") == "text/event-stream"
        for raw in resp:
            line = raw.decode().strip()
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            if stop.is_set():
                break
        conn.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_events_follow_a_push_and_filter_by_model(agent_factory):
    agent = agent_factory("--HandoffAgent.checks=['loads']", "--HandoffAgent.forward_to=[]")
    mine, everything, stop = [], [], threading.Event()
    follow(agent, "model=watched", mine, stop)
    follow(agent, "", everything, stop)
    import time

    time.sleep(0.5)  # both streams connected
    agent.push_bytes("other", bundle_bytes("other"))
    agent.push_bytes("watched", bundle_bytes("watched"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(e["type"] == "report" for e in mine):
        time.sleep(0.1)
    stop.set()
    kinds = [(e["type"], e.get("check"), e.get("status")) for e in mine]
    assert kinds[0] == ("version", None, "checking")
    assert ("check", "loads", "running") in kinds and ("check", "loads", "fail") in kinds
    assert kinds.index(("check", "loads", "fail")) < kinds.index(("verdict", None, "failed"))
    assert kinds[-1][0] == "report"
    assert {e["model"] for e in mine} == {"watched"}
    assert {"other", "watched"} <= {e.get("model") for e in everything}


def test_events_reject_a_bad_filter(agent):
    status, body = agent.request("GET", "/api/v1/events?model=../x")
    assert status == 400 and body["error"]["code"] == "invalid_name"


def test_watchers_see_the_events_this_process_publishes_not_those_relayed():
    """A review notice goes out once, from the replica that moved the version."""
    from handoff_agent.events import EventBus

    bus, seen = EventBus(), []
    bus.watchers.append(seen.append)
    bus.publish("stage", model="churn", version=1, stage="validated")
    bus.publish("stage", relayed=True, model="churn", version=2, stage="validated")
    assert [e["version"] for e in seen] == [1]


def test_a_stream_open_when_the_agent_stops_ends_without_an_error_in_its_log(agent_factory):
    import time

    agent = agent_factory()
    got, stop = [], threading.Event()
    reader = follow(agent, "", got, stop)
    time.sleep(0.5)  # connected
    agent.stop()
    reader.join(30)
    assert not reader.is_alive()  # the stream ended with the agent
    log = (agent.home.parent / f"{agent.home.name}.log").read_text()
    assert "Handoff agent stopped" in log
    assert " ERROR" not in log, log
