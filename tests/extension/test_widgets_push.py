"""The live push widget, driven by a real push to a real agent; asserted on its traits."""

from __future__ import annotations

import pytest
from support import until

from handoff_agent.vocabulary import VERDICT_STATUS
from jupyter_handoff import api
from jupyter_handoff.widgets import display
from jupyter_handoff.widgets.push import PushWidget


def test_widget_follows_a_real_push(connected, data, model):
    # Given a real push; When its widget is built while the checks run
    X, y = data
    version = api.push(model, "churn", X=X, y=y, sensitive=["gender"], message="first")
    widget = version.widget()
    assert not widget.done, "building the widget must not wait for the checks (a second or more)"
    until(lambda: widget.done, what="the verdict and the report")
    # Then it holds a row per check, the final verdict with reasons, and the report
    stored = connected.request("GET", "/api/v1/models/churn/versions/1")[1]
    names = [c["name"] for c in stored["checks"]]
    assert list(widget.rows) == names and [r for r in widget.rows_box.children] == [
        widget.rows[n] for n in names
    ]
    for c in stored["checks"]:
        assert widget.checks[c["name"]]["status"] == c["status"]
        assert f"title='{c['status']}'" in widget.rows[c["name"]].value
        assert c["message"].splitlines()[0][:40] in widget.rows[c["name"]].value.replace(
            "&#x27;", "'"
        )
    assert (widget.progress.value, widget.progress.max) == (len(names), len(names))
    assert widget.verdict == stored["verdict"]["verdict"]
    assert widget.reasons == stored["verdict"]["reasons"]
    assert (
        widget.progress.bar_style
        == {"pass": "success", "warn": "warning", "fail": "danger"}[widget.verdict]
    )
    assert "Verdict" in widget.verdict_html.value
    assert widget.report_ready and not widget.report_button.disabled
    assert widget.report_url.endswith("/api/v1/models/churn/versions/1/report")
    assert "jupyter handoff report churn:1" in widget.report_hint.value
    widget.report_button.click()
    assert widget.report_view.value.startswith('<iframe sandbox=""')
    # the follower ends once done (after a last refresh, which a loaded machine can slow)
    until(
        lambda: not widget._follower.thread.is_alive() or widget._follower.stopped,
        what="the event follower to end",
    )
    assert "PushWidget('churn', 1" in repr(widget)


def test_widget_of_a_checked_version_needs_no_stream(connected, data, model):
    from support import wait_checked

    X, y = data
    api.push(model, "churn", X=X, y=y)
    wait_checked(connected, "churn", 1)
    # Settled as the API tells it (verdict, report, no hand-off in flight) ...
    until(lambda: api.get("churn", 1).widget(follow=False).done, what="a settled version")
    # ... a widget built for it opens no stream
    widget = api.get("churn", 1).widget()
    assert widget.done and widget._follower is None
    assert widget.verdict in ("pass", "warn", "fail")
    # No central to ask about alerts: no badge, and the widget is built all the same
    assert widget.alerts == [] and "handoff-alerts" not in widget.header.value


def test_widget_says_when_the_agent_dies_and_resumes(connected, data, model):
    # Given a push whose checks are running
    X, y = data
    version = api.push(model, "churn", X=X, y=y, sensitive=["gender"])
    widget = version.widget()
    # When the agent is killed -9
    connected.kill9()
    until(lambda: widget.agent_lost, timeout=30, what="the widget to notice")
    # Then the widget says so and how to restart it
    assert "stopped answering" in widget.notice.value
    assert "jupyter handoff serve" in widget.notice.value
    assert "%mlops agent start" in widget.notice.value
    # And when an agent is back, it picks up and finishes
    connected.start()
    until(lambda: widget.done, what="the resumed checks")
    assert not widget.agent_lost and widget.notice.value == ""
    assert widget.verdict in ("pass", "warn", "fail")
    # and the version object pushed before follows the agent to its new port too
    assert version.refresh().status == VERDICT_STATUS[widget.verdict]


@pytest.mark.parametrize("kernel", [True, False])
def test_display_is_a_widget_in_a_kernel_and_html_elsewhere(
    connected, data, model, monkeypatch, kernel
):
    X, y = data
    version = api.push(model, "churn", X=X, y=y)
    shown = []
    monkeypatch.setattr(display, "in_kernel", lambda: kernel)
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False, **kw: shown.append(obj))
    made = []
    monkeypatch.setattr(version, "widget", lambda: made.append(PushWidget(version)) or made[-1])
    version._ipython_display_()
    (bundle,) = shown
    assert "text/html" in bundle and bundle["text/plain"] == repr(version)
    assert ("application/vnd.jupyter.widget-view+json" in bundle) is kernel
    for w in made:
        w.stop()


@pytest.fixture
def held_agent(agent_factory, settings, monkeypatch):
    """An agent whose explainability check hangs until its timeout (hostile.BigBatches), so a
    version stays checking after its first checks are in."""
    a = agent_factory(
        "--HandoffAgent.workers=2",
        "--HandoffAgent.check_timeout=15",
        "--HandoffAgent.forward_to=[]",
    )
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(a.runtime_dir))
    return a


def test_widget_shows_the_provisional_verdict_then_the_final_one(held_agent, data):
    from handoff_agent import hostile

    X, y = data
    version = api.push(hostile.BigBatches(limit=len(X)), "held", X=X, y=y)
    widget = version.widget()
    # Given the first checks are in while explainability still runs
    until(lambda: widget.provisional, what="the provisional verdict")
    # Then the widget says so, outlined, and names what it waits on
    assert not widget.verdict and widget.status == "checking"
    assert widget.provisional["verdict"] in ("pass", "warn", "fail")
    assert "explainability" in widget.provisional["pending"]
    assert "Provisional verdict" in widget.verdict_html.value
    assert "dashed" in widget.header.value
    # When the last check is in, the final verdict replaces it
    until(lambda: widget.done, what="the final verdict")
    assert widget.verdict and widget.provisional == {}
    assert "Provisional" not in widget.verdict_html.value
    assert "dashed" not in widget.header.value


def test_a_client_whose_port_another_program_took_follows_the_agent(connected):
    """After a restart, the agent's old port may be another program's, which answers no HTTP:
    the client reads the runtime file and asks the agent there (a BadStatusLine before)."""
    import socket
    import threading

    from jupyter_handoff.client import AgentClient

    with socket.create_server(("127.0.0.1", 0)) as other:

        def answer():
            conn, _ = other.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"\xff\xfb\x01 not http\r\n")

        threading.Thread(target=answer, daemon=True).start()
        client = AgentClient(f"http://127.0.0.1:{other.getsockname()[1]}", "the-old-token")
        client.follows_runtime = True
        assert "models" in client.get("/api/v1/models")
        assert client.url == connected.url.rstrip("/")
