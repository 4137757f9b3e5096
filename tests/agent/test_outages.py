"""PostgreSQL or S3 going away under a running central (restarted, a network cut): every API
call that needs it answers 503 with Retry-After and the error shape (``database_busy``,
``blob_store_unavailable``), never a 500, and central serves again as soon as it is back,
without a restart. A command that reads the database directly says so in one line and exits
non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse

import pandas as pd
import pytest
from backends import Relay
from s3_support import corrupt_blob, s3_agent_args
from support import RunningAgent, until
from test_pipeline_central import POLICY
from test_pipeline_delivery import deliver, envelope


@pytest.fixture
def central_behind_a_cut(tmp_path, backend):
    if backend.postgres is None:
        pytest.skip("the outage is PostgreSQL's")
    relay = Relay(5432)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(revalidate="false"))
    central = RunningAgent(
        tmp_path / "central",
        tmp_path / "rt",
        ["--role", "central", "--policy", str(policy)],
        database_url=relay.url(backend.database_url()),
    )
    central.start()
    yield central, relay
    central.stop()
    relay.close()


def test_central_answers_503_while_postgresql_is_unreachable_then_recovers(central_behind_a_cut):
    central, relay = central_behind_a_cut
    # Given a central on PostgreSQL holding one version
    assert deliver(central, envelope("outage"))[0] == 201
    path = "/api/v1/models/outage/versions/1"
    # When PostgreSQL becomes unreachable
    mark = len(central.read_log())
    relay.cut()
    calls = [
        ("GET", "/api/v1/models", None),
        ("GET", path, None),
        ("GET", "/api/v1/reviews", None),
        ("GET", "/api/v1/models/outage/deployment", None),
        ("POST", path + "/transition", {"to": "archived"}),
    ]
    for method, route, body in calls:
        status, headers, answer = central.request_full(method, route, body=body)
        # then each call is a 503 the caller may retry, in the one error shape
        assert status == 503, (method, route, answer)
        assert answer["error"]["code"] == "database_busy", answer
        assert int(headers["Retry-After"]) > 0
    # and a delivery is refused the same way, so its sender keeps it and retries
    status, answer = deliver(central, envelope("outage-2"))
    assert status == 503 and answer["error"]["code"] == "database_busy", answer
    assert "Uncaught exception" not in central.read_log()
    # and a load balancer's readiness probe takes it out of rotation; it is alive all along
    status, headers, answer = central.request_full("GET", "/api/v1/ready")
    assert status == 503 and answer["error"]["code"] == "database_busy", answer
    assert central.request("GET", "/api/v1/health")[0] == 200
    # and its background loops note the outage in a line, not a traceback every round
    outage = lambda: central.read_log()[mark:]  # noqa: E731
    until(lambda: "noted once a minute while it lasts" in outage(), what="an outage line")
    assert "Traceback" not in outage()
    # When PostgreSQL is back, central answers again without a restart
    relay.restore()
    until(lambda: central.request("GET", "/api/v1/models")[0] == 200, timeout=30)
    status, ready = central.request("GET", "/api/v1/ready")
    assert (status, ready) == (200, {"status": "ready", "role": "central", "model_server": "ready"})
    assert deliver(central, envelope("outage-2"))[0] == 201
    assert central.request("GET", path)[1]["stage"] != "archived"  # the refused call did nothing


def test_a_command_on_an_unreachable_database_is_one_line(tmp_path):
    env = {"HANDOFF_DATABASE_URL": "postgresql://someone:pw-5e0b@127.0.0.1:1/handoff"}
    home = str(tmp_path / "central")
    for args in (
        ["token", "create", "--user", "rita", "--role", "reviewer"],
        ["audit", "verify"],
        ["serve", "--role", "central", "--port", "0"],
    ):
        p = subprocess.run(
            [sys.executable, "-m", "handoff_agent", *args, "--home", home],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr and p.stdout == "", (p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "The database is unreachable" in lines[0], (args, lines)
        assert "pw-5e0b" not in p.stdout + p.stderr


def central_on_s3_behind_a_relay(tmp_path, backend, revalidate: str) -> tuple:
    """A started central whose blobs are in the run's S3, reached through a relay a test may
    cut: (central, relay)."""
    if backend.s3 is None:
        pytest.skip("the outage is S3's")
    relay = Relay(urllib.parse.urlsplit(backend.s3.endpoint).port)
    args, env = s3_agent_args(backend.s3, backend.s3.new_bucket())
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(revalidate=revalidate))
    central = RunningAgent(
        tmp_path / "central",
        tmp_path / "rt-central",
        ["--role", "central", "--policy", str(policy), *map(relay.url, args)],
        env=env,
    )
    central.start()
    return central, relay


def test_central_answers_503_while_s3_is_unreachable_then_recovers(tmp_path, backend):
    central, relay = central_on_s3_behind_a_relay(tmp_path, backend, revalidate="false")
    try:
        # Given a central on S3 holding one version
        assert deliver(central, envelope("s3-outage"))[0] == 201
        bundle = "/api/v1/models/s3-outage/versions/1/bundle"
        # When S3 becomes unreachable, a delivery and a download are 503s to retry later
        relay.cut()
        status, headers, answer = deliver(central, envelope("s3-outage-2"), full=True)
        assert status == 503 and answer["error"]["code"] == "blob_store_unavailable", answer
        assert int(headers["Retry-After"]) > 0
        status, headers, answer = central.request_full("GET", bundle)
        assert status == 503 and answer["error"]["code"] == "blob_store_unavailable", answer
        assert int(headers["Retry-After"]) > 0
        status, headers, answer = central.request_full("GET", "/api/v1/ready")
        assert status == 503 and answer["error"]["code"] == "blob_store_unavailable", answer
        # and a backfill from the shell says so in one line, and records nothing
        log = tmp_path / "log.parquet"
        pd.DataFrame({"time": [time.time() - 3600.0], "prediction": [1], "a": [0.5]}).to_parquet(
            log
        )
        p = central.cli("monitor", "import", "s3-outage", str(log))
        assert p.returncode == 1 and p.stdout == "", p.stdout + p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("The blob store failed"), lines
        # When S3 is back, all three work again without a restart
        relay.restore()
        assert deliver(central, envelope("s3-outage-2"))[0] == 201
        assert central.request_full("GET", bundle)[0] == 200
        assert central.request("GET", "/api/v1/ready")[0] == 200
        p = central.cli("monitor", "import", "s3-outage", str(log))
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        central.stop()
        relay.close()


def test_a_corrupted_prediction_log_segment_export_is_a_409_naming_fsck(tmp_path, backend):
    # Given a central with a day of imported predictions and their reference
    central = RunningAgent(tmp_path / "central", tmp_path / "rt", ["--role", "central"])
    central.start()
    try:
        day = (time.time() // 86400 - 1) * 86400
        log = pd.DataFrame({"a": [0.1 * i for i in range(50)], "prediction": [0, 1] * 25})
        log.to_parquet(tmp_path / "ref.parquet")
        log.assign(time=day + 60.0 * log.index).to_parquet(tmp_path / "log.parquet")
        for args in (("ref.parquet", "--reference"), ("log.parquet",)):
            p = central.cli("monitor", "import", "churn", str(tmp_path / args[0]), *args[1:])
            assert p.returncode == 0, p.stdout + p.stderr
        # When the stored segment no longer matches its digest (disk rot, a bad S3 object)
        (segment,) = central.sql("SELECT digest FROM prediction_segments")
        corrupt_blob(central, segment["digest"])
        # then exporting the log is refused with what to do, never a 500
        status, answer = central.request("GET", "/api/v1/models/churn/predictions")
        assert status == 409, answer
        assert answer["error"]["code"] == "log_segments_quarantined", answer
        assert "fsck" in answer["error"]["hint"]
        # and evaluating it goes on without the segment, saying so (test_monitor_quarantine)
        status, answer = central.request("POST", "/api/v1/models/churn/monitor/run", body={})
        assert status == 200, answer
        assert [s["digest"] for s in answer["skipped"]] == [segment["digest"]]
        assert "Uncaught exception" not in central.read_log()
    finally:
        central.stop()
