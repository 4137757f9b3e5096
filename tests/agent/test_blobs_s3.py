"""Agents on S3, end to end, against a real S3 server (seaweedfs on loopback).

A local agent on files forwards to a central whose blobs live in a bucket: the push goes through
checks, the hand-off, central's intake (which stores the bundle in S3), its re-validation and
the sign-offs. A local agent on S3 runs its sandboxed checks from verified temporary copies.
The credentials reach the agents only through the standard AWS chain and show up in none of
their output, logs, status or environment.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import s3_support
from s3_support import s3_agent_args, start_s3_server, tamper_blob
from sklearn.linear_model import LogisticRegression
from support import RunningAgent, bundle_bytes, forwarding_args, push_model, until, wait_checked
from test_pipeline_central import FIRST_SECRET, POLICY


@pytest.fixture(scope="module")
def model_and_data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(400, 4)), columns=list("abcd"))
    y = (X["a"] + X["b"] > 0).astype(int)
    return LogisticRegression().fit(X, y), X, y


def keys(s3_server, bucket: str) -> set[str]:
    listed = s3_server.client().list_objects_v2(Bucket=bucket)
    return {o["Key"] for o in listed.get("Contents", [])}


def key_of(digest: str) -> str:
    return f"blobs/{digest[:2]}/{digest[2:]}"


def download(agent: RunningAgent, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(agent.host, agent.port, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": f"token {agent.token}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def status_json(agent: RunningAgent) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "handoff_agent", "status", "--json"],
        env=agent.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_push_reaches_production_through_a_central_on_s3(s3_server, model_and_data, tmp_path):
    model, X, y = model_and_data
    bucket = s3_server.new_bucket()
    s3_args, s3_env = s3_agent_args(s3_server, bucket)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(revalidate="true"))
    # Given a central whose blobs live in S3, logging everything it logs
    central = RunningAgent(
        tmp_path / "central",
        tmp_path / "rt-central",
        ["--role", "central", "--policy", str(policy), "--log-level=DEBUG", *s3_args],
        env=s3_env,
    )
    central.start()
    # and a local agent on files forwarding to it
    local = RunningAgent(
        tmp_path / "local",
        tmp_path / "rt-local",
        forwarding_args(central, FIRST_SECRET),
    )
    local.start()
    try:
        bob = central.make_token("bob", "reviewer")
        carol = central.make_token("carol", "admin")
        # When a passing push is handed off
        v = push_model(local, model, "churn", X=X, y=y)
        assert wait_checked(local, "churn", v.number)["status"] in ("passed", "warned")
        stage = lambda: local.request("GET", f"/api/v1/models/churn/versions/{v.number}")[1]  # noqa: E731
        until(lambda: stage().get("stage") == "validated", timeout=120, what="validated")
        # Then central stored the converted bundle and its reports in the bucket, not on disk
        remote = central.request("GET", "/api/v1/models/churn/versions/1")[1]
        assert [s["stage"] for s in remote["stages"]] == ["received", "validated"]
        assert remote["serialization"] == "skops" and remote["pushed_by"] == "alice"
        stored = keys(s3_server, bucket)
        assert key_of(remote["digest"]) in stored
        status, report = central.request("GET", "/api/v1/models/churn/versions/1/report")
        assert status == 200 and "churn" in report
        assert len(stored) >= 1 + 3  # the bundle, and the html, json and md reports
        assert not (central.home / "blobs").exists()
        # and the bundle central serves is the one S3 holds, verified
        status, body = download(central, "/api/v1/models/churn/versions/1/bundle")
        assert status == 200 and hashlib.sha256(body).hexdigest() == remote["digest"]

        # And the sign-offs walk it to production, mirrored back to the local agent
        path = "/api/v1/models/churn/versions/1/signoffs"
        ok = {"decision": "approve", "comment": ""}
        assert central.request("POST", path, ok, token=bob) == (201, {"stage": "approved"})
        assert central.request("POST", path, ok, token=bob) == (201, {"stage": "canary"})
        central.request("POST", path, ok, token=bob)
        assert central.request("POST", path, ok, token=carol) == (201, {"stage": "production"})
        until(lambda: stage().get("stage") == "production", timeout=90, what="production")

        # The credentials are in none of central's output, its runtime file, or its environment
        secret = s3_server.secret_key.encode()
        info = json.loads(central.runtime_file.read_text())
        assert info["blobs"] == f"s3://{bucket}/blobs"
        assert secret not in central.runtime_file.read_bytes()
        assert secret not in (central.home.parent / "central.log").read_bytes()
        environ = Path(f"/proc/{central.proc.pid}/environ").read_bytes()
        assert secret not in environ and b"AWS_SECRET_ACCESS_KEY=" not in environ
    finally:
        local.stop()
        central.stop()
    assert secret not in (central.home.parent / "central.log").read_bytes()


def test_a_local_agent_on_s3_checks_from_temporary_copies(
    s3_server, model_and_data, agent_factory, tmp_path
):
    model, X, y = model_and_data
    bucket = s3_server.new_bucket()
    s3_args, s3_env = s3_agent_args(s3_server, bucket)
    # Given a local agent whose blobs live in S3 (no central to forward to)
    agent = agent_factory("--HandoffAgent.forward_to=[]", *s3_args, env=s3_env)
    # When a model is pushed, its checks run in sandboxed workers from a verified copy
    v = push_model(agent, model, "risk", X=X, y=y)
    version = wait_checked(agent, "risk", v.number)
    assert version["status"] in ("passed", "warned"), version
    assert {c["status"] for c in version["checks"]} <= {"pass", "warn", "skip"}, version
    stored = keys(s3_server, bucket)
    assert key_of(v.digest) in stored and not (agent.home / "blobs").exists()
    # and nothing is left in the agent's scratch directory
    assert list((agent.home / "tmp").iterdir()) == []
    # The status says where the blobs are, and holds no credential; nor do the log and environ
    out = status_json(agent)
    assert json.loads(out.stdout)["blobs"] == f"s3://{bucket}/blobs"
    assert s3_server.secret_key not in out.stdout + out.stderr + agent.read_log()
    environ = Path(f"/proc/{agent.proc.pid}/environ").read_bytes()
    assert s3_server.secret_key.encode() not in environ
    # A second version runs the performance check against the first as champion
    v2 = push_model(agent, model, "risk", X=X, y=y)
    assert wait_checked(agent, "risk", v2.number)["status"] in ("passed", "warned")

    # fsck re-hashes every blob in the bucket, and names one changed behind the store's back
    fsck = agent.cli("fsck", *s3_args)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert "fsck: OK" in fsck.stdout
    tamper_blob(agent, v.digest, b"rotten")
    fsck = agent.cli("fsck", *s3_args)
    assert fsck.returncode == 1 and f"CORRUPT blob {v.digest}" in fsck.stdout
    # and a download of the damaged bundle is refused rather than served
    status, body = agent.request("GET", f"/api/v1/models/risk/versions/{v.number}/bundle")
    assert (status, body["error"]["code"]) == (409, "blob_corrupt")


def test_an_agent_with_a_wrong_bucket_says_so_and_stops(s3_server, tmp_path):
    s3_args, s3_env = s3_agent_args(s3_server, "no-such-bucket-anywhere")
    agent = RunningAgent(tmp_path / "home", tmp_path / "rt", s3_args, env=s3_env)
    with pytest.raises(RuntimeError, match="does not exist") as e:
        agent.start()
    agent.stop()
    assert s3_server.secret_key not in str(e.value)


def test_an_s3_that_answers_503_at_start_is_said_to_be_failing_not_refusing(tmp_path):
    """An overloaded S3 (503 to every request) is no credentials problem: the agent says S3
    is failing, not that it refused access with the hint about credentials."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Overloaded(BaseHTTPRequestHandler):
        def _fail(self):
            body = b"<Error><Code>ServiceUnavailable</Code></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET = do_PUT = _fail

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Overloaded)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x" * 30}
    env["AWS_MAX_ATTEMPTS"] = "1"
    args = [
        "--blob-url",
        "s3://bucket/blobs",
        f"--HandoffAgent.s3_endpoint_url=http://127.0.0.1:{server.server_address[1]}",
    ]
    agent = RunningAgent(tmp_path / "home", tmp_path / "rt", args, env=env)
    try:
        with pytest.raises(RuntimeError, match=r"S3 is failing \(503\) for s3://bucket/blobs"):
            agent.start()
    finally:
        agent.stop()
        server.shutdown()


def test_a_push_while_s3_is_down_is_a_503_and_leaves_nothing(agent_factory, tmp_path):
    server = start_s3_server(tmp_path / "own-s3")  # its own server, to take down
    try:
        s3_args, s3_env = s3_agent_args(server, server.new_bucket())
        agent = agent_factory(
            "--HandoffAgent.checks=[]", "--HandoffAgent.forward_to=[]", *s3_args, env=s3_env
        )
    finally:
        # Given S3 goes away under a running agent
        server.stop()
    # Then a push is refused as "try again later", never a 500, and nothing is half-stored
    status, body = agent.push_bytes("churn", bundle_bytes("churn"))
    assert status == 503, (status, body)
    assert body["error"]["code"] == "blob_store_unavailable", body
    assert server.secret_key not in json.dumps(body) + agent.read_log()
    assert agent.request("GET", "/api/v1/models")[1]["models"] == []
    assert list((agent.home / "tmp").iterdir()) == []


def test_without_weed_the_s3_tests_skip_but_fail_under_ci(monkeypatch):
    monkeypatch.setattr(s3_support, "weed_binary", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="seaweedfs"):
        s3_support.require_weed()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the S3 tests"):
        s3_support.require_weed()


def test_an_unreachable_endpoint_is_named_without_its_password(tmp_path, monkeypatch):
    """The start error quoted c.HandoffAgent.s3_endpoint_url, user:password and all (twice:
    ours, and botocore's message quoting the URL it tried)."""
    from handoff_agent.store.s3 import S3BlobStore

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x" * 30)
    with pytest.raises(ValueError) as e:
        S3BlobStore.from_url("s3://bucket/p", tmp_path, "http://minio:s3cr3t-pw@127.0.0.1:1")
    said = str(e.value)
    assert said.startswith("Cannot reach S3 for s3://bucket/p at http://minio:***@127.0.0.1:1: ")
    assert "s3cr3t-pw" not in said and "c.HandoffAgent.s3_endpoint_url" in said
