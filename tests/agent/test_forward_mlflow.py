"""The ``mlflow`` destination against a real ``mlflow server`` started here (CI installs it)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("mlflow")

from s3_support import agent_blobs
from support import RunningAgent, bundle_bytes, push_model, until

from handoff_agent.forwarding.api import Delivery
from handoff_agent.forwarding.mlflow import MLflowDestination


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, backend):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=root,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: teardown ends the workers too
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start in 120 s")
            time.sleep(0.25)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)  # uvicorn drains keep-alive connections first: do not wait long
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def forwards(agent: RunningAgent, name: str) -> list[dict]:
    status, body = agent.request("GET", f"/api/v1/models/{name}/versions/1")
    return body["forwards"] if status == 200 else []


def mlflow_agent(tmp_path: Path, uri: str, *extra: str, checks="['loads']") -> RunningAgent:
    agent = RunningAgent(
        tmp_path / "home",
        tmp_path / "rt",
        [
            "--forward-to",
            "mlflow",
            f"--MLflowDestination.tracking_uri={uri}",
            "--MLflowDestination.timeout=240",
            "--HandoffAgent.forward_backoff=0.2",
            f"--HandoffAgent.checks={checks}",
            *extra,
        ],
    )
    agent.start()
    return agent


def test_registers_the_version_with_verdict_tags_and_report(tmp_path, mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    agent = mlflow_agent(tmp_path, mlflow_server, "--MLflowDestination.registered_model_prefix=h-")
    try:
        pushed = push_model(agent, model, "irises", X=X, y=y)
        fwd = until(
            lambda: [f for f in forwards(agent, "irises") if f["state"] == "delivered"], 240
        )[0]
        version = agent.request("GET", "/api/v1/models/irises/versions/1")[1]
    finally:
        agent.stop()
    remote = fwd["remote"] if isinstance(fwd["remote"], dict) else json.loads(fwd["remote"])
    assert remote["registered_model"] == "h-irises" and remote["mlflow_version"] == 1

    client = MlflowClient(mlflow_server)
    mv = client.get_model_version("h-irises", "1")
    tags = mv.tags
    assert tags["handoff.verdict"] == version["verdict"]["verdict"] == "pass"
    assert json.loads(tags["handoff.reasons"]) == version["verdict"]["reasons"]
    assert tags["handoff.digest"] == version["digest"] == pushed.digest
    assert tags["handoff.local_version"] == "1"
    assert tags["handoff.pushed_by"] == version["pushed_by"]
    assert tags["handoff.check.loads"] == version["checks"][0]["status"] == "pass"
    assert tags["handoff.delivery_id"] == fwd["delivery_id"]
    run_id = mv.run_id or remote["run_id"]
    assert run_id == remote["run_id"]
    files = {a.path for a in client.list_artifacts(run_id, "handoff")}
    assert files == {"handoff/report.html", "handoff/manifest.json"}
    html = Path(client.download_artifacts(run_id, "handoff/report.html", str(tmp_path)))
    assert "irises" in html.read_text()

    # The registered model predicts like the pushed one
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    loaded = mlflow.pyfunc.load_model("models:/h-irises/1")
    assert list(loaded.predict(X.head(5))) == list(model.predict(X.head(5)))

    # A retry of the same delivery registers nothing new. Its body, built again as the agent
    # built it (the agent removed the delivered one):
    dest = MLflowDestination(tracking_uri=mlflow_server, registered_model_prefix="h-")
    (report,) = agent.sql("select digest from reports where kind = 'html'")[0].values()

    async def report_digest(*_):
        return report

    delivery = Delivery(fwd["delivery_id"], "mlflow", "irises", 1, pushed.digest, version=version)
    built = SimpleNamespace(agent_id="again", report_digest=report_digest)
    delivery.body = io.BytesIO(asyncio.run(dest.body(built, delivery)))
    # What a destination gets of its agent, in its context: blob copies (a sandbox, limits)
    blobs = agent_blobs(agent)
    ctx = SimpleNamespace(local_copy=blobs.local_copy, sandbox=None, limits=None)
    again = dest.deliver(delivery, ctx=ctx)
    assert again.ok, again.error
    assert again.remote["mlflow_version"] == 1 and again.remote["run_id"] == run_id
    assert [v.version for v in client.search_model_versions("name = 'h-irises'")] == ["1"]


def test_unreachable_server_is_retried_not_dead_lettered(tmp_path):
    # A tracking URI with a password in it (MLflow's basic auth) never shows it
    uri = f"http://alice:Pw-9xQ%40secret@127.0.0.1:{free_port()}"
    agent = mlflow_agent(tmp_path, uri, checks="[]")
    try:
        agent.push_bytes("offline", bundle_bytes("offline"))
        fwd = until(lambda: [f for f in forwards(agent, "offline") if f["last_error"]], 60)[0]
        assert fwd["state"] == "pending"
        assert "unreachable" in fwd["last_error"] and "alice:***@127.0.0.1" in fwd["last_error"]
        status, listed = agent.request("GET", "/api/v1/outbox/deliveries?state=pending,dead")
        assert status == 200 and "alice:***@" in json.dumps(listed)
        assert "Pw-9xQ" not in json.dumps(listed)
        time.sleep(1.5)  # more attempts, still pending
        fwd = forwards(agent, "offline")[0]
        assert fwd["state"] == "pending" and fwd["attempts"] >= 2
    finally:
        agent.stop()


def test_a_model_that_cannot_load_is_dead_lettered_with_a_message(tmp_path, mlflow_server):
    # A password in the URI is sent as basic auth: the server is reached, not "unreachable"
    with_password = mlflow_server.replace("http://", "http://alice:Pw-9xQ@")
    agent = mlflow_agent(tmp_path, with_password, checks="[]")
    try:
        agent.push_bytes("broken", bundle_bytes("broken", model=b"not a pickle"))
        fwd = until(lambda: [f for f in forwards(agent, "broken") if f["state"] == "dead"], 120)[0]
    finally:
        agent.stop()
    assert "does not load in a clean process" in fwd["last_error"]
    assert "Pw-9xQ" not in fwd["last_error"]
