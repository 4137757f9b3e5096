"""Two central replicas sharing one PostgreSQL database act as one: a delivery that reaches
both is applied once, version numbers and the audit chain stay whole, tokens work on both,
and a stage change made through one shows on the other's event stream. The database
password never shows in a log or in ``status``."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from backends import PASSWORD
from support import RunningAgent, handoff_cli
from test_pipeline_central import POLICY
from test_pipeline_delivery import deliver, envelope


@pytest.fixture
def replicas(tmp_path, backend):
    if backend.postgres is None:
        pytest.skip("replicas share a PostgreSQL database")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(revalidate="false"))
    url = backend.database_url()
    blob_args, blob_env = backend.blob_store(tmp_path / "shared")  # one bucket for both
    started = []
    for name in ("a", "b"):
        r = RunningAgent(
            tmp_path / name,
            tmp_path / f"rt-{name}",
            ["--role", "central", "--policy", str(policy), *blob_args],
            database_url=url,
            env=blob_env,
        )
        r.start()
        started.append(r)
    yield started
    for r in started:
        r.stop()


def test_a_delivery_to_both_replicas_is_applied_once_and_their_keys_are_compared(replicas):
    a, b = replicas
    bodies = [(uuid.uuid4().hex, envelope("shared", f"model {i}".encode())) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda job: deliver(job[0], job[2], delivery_id=job[1]),
                [(r, d, body) for d, body in bodies for r in (a, b)],
            )
        )
    for i in range(len(bodies)):
        (s1, first), (s2, second) = answers[2 * i], answers[2 * i + 1]
        assert sorted([s1, s2]) == [200, 201], (first, second)
        assert first["version"] == second["version"]
    status, listing = a.request("GET", "/api/v1/models/shared/versions")
    assert status == 200
    numbers = sorted(v["number"] for v in listing["versions"])
    assert numbers == list(range(1, len(bodies) + 1))
    assert b.request("GET", "/api/v1/models/shared/versions")[1] == listing
    for r in (a, b):  # one chain, written by both, verifies from either
        p = r.cli("audit", "verify", "--agent-role", "central")
        assert p.returncode == 0, p.stdout + p.stderr
        assert "audit: OK" in p.stdout
    # Behind a load balancer either replica signs a dossier: each with its own key, a
    # verifier pinned to one refuses the other's. The later replica says so at start.
    ka, kb = (r.request("GET", "/api/v1/keys", token=False)[1]["keys"][0]["key_id"] for r in (a, b))
    assert ka != kb
    warning = f"other central replicas on this database signed dossiers with key(s) {ka}"
    assert warning in b.read_log() and f"this one signs with {kb}" in b.read_log()
    assert "signed dossiers with key(s)" not in a.read_log()
    assert "or this is another replica: give every replica one key with c.HandoffAgent." in (
        b.read_log()
    )


def read_events(agent: RunningAgent, found: list, stop: threading.Event) -> None:
    conn = http.client.HTTPConnection(agent.host, agent.port, timeout=60)
    conn.request("GET", "/api/v1/events", headers={"Authorization": f"token {agent.token}"})
    resp = conn.getresponse()
    while not stop.is_set():
        line = resp.fp.readline()
        if not line:
            return
        if line.startswith(b"data: "):
            found.append(json.loads(line[6:]))


def test_a_stage_change_through_one_replica_streams_from_the_other(replicas):
    a, b = replicas
    assert deliver(a, envelope("streamed"))[0] == 201
    reviewer = a.make_token("rita", "reviewer")  # in the shared database: valid on both
    found: list = []
    stop = threading.Event()
    reader = threading.Thread(target=read_events, args=(b, found, stop), daemon=True)
    reader.start()
    time.sleep(0.5)  # the stream is open before the change
    path = "/api/v1/models/streamed/versions/1"
    status, body = a.request("POST", path + "/transition", body={"to": "archived"})
    assert status == 200, body
    assert body["stage"] == "archived"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        e.get("type") == "stage" and e.get("stage") == "archived" for e in found
    ):
        time.sleep(0.1)
    stop.set()
    assert any(
        e.get("type") == "stage" and e.get("model") == "streamed" and e.get("stage") == "archived"
        for e in found
    ), found
    assert b.request("GET", path, token=reviewer)[1]["stage"] == "archived"


def test_the_database_password_is_never_shown(agent, backend):
    if backend.postgres is None:
        pytest.skip("the SQLite default has no password")
    a = agent
    assert PASSWORD in a.database_url
    assert a.request("GET", "/api/v1/models")[0] == 200
    p = subprocess.run(
        [sys.executable, "-m", "handoff_agent", "status", "--json"],
        env={**a.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    status = json.loads(p.stdout)
    assert status["running"] and "***" in status["database"]
    assert PASSWORD not in p.stdout + p.stderr
    assert PASSWORD not in a.read_log()
    assert PASSWORD not in a.runtime_file.read_text()
    # It came in HANDOFF_DATABASE_URL, which the agent dropped: not in ps, not in /proc.
    for what in ("cmdline", "environ"):
        assert PASSWORD.encode() not in Path(f"/proc/{a.proc.pid}/{what}").read_bytes()


def test_a_command_given_no_database_url_says_the_running_central_keeps_it_elsewhere(replicas):
    """Central on PostgreSQL (and S3) keeps nothing of its metadata in its home: a command
    given no --database-url said "No registry at HOME … start the agent once" while it ran,
    and given no --blob-url fsck called every S3 blob missing. It names the option (exit 2)."""
    a, _ = replicas
    env = {k: v for k, v in a.env.items() if k != "HANDOFF_DATABASE_URL"}

    out = handoff_cli(
        env, "token", "create", "--user", "eve", "--role", "analyst", "--agent-role", "central"
    )

    assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr.strip() == (
        f"The central agent running on {a.home} (pid {a.proc.pid}) keeps its metadata in "
        f"{a.database_url.replace(PASSWORD, '***')}, not in its home: pass --database-url, "
        "the URL it was started with."
    )
    if "--blob-url" in a.args:  # S3
        out = handoff_cli(a.env, "fsck", "--agent-role", "central")
        assert out.returncode == 2, out.stdout + out.stderr
        assert "keeps its blobs in s3://" in out.stderr and "pass --blob-url" in out.stderr
        assert "MISSING" not in out.stdout
