"""A check run held by a central replica that dies for good (kill -9, never restarted) does
not leave its version checking forever: the other replica, sharing the PostgreSQL database,
takes the run over once its claim lapses, runs it, and the version gets its verdict. While
the first replica lives it renews its claim, and the other leaves the run alone."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest
from onnx_support import bundle_of
from support import RunningAgent, until, wait_checked
from test_pipeline_central import POLICY
from test_pipeline_delivery import chain, deliver

from handoff_agent import hostile
from handoff_agent.bundle import write_tar

LEASE = "--HandoffAgent.check_lease=2"  # seconds: a dead replica's run lapses quickly
# "slow" is the smoke check on replica a, where this model hangs in it (more than 10 rows at
# once), and the quick loads check on replica b: b's verdict shows b ran it.
ON_A = {"check": {"slow": "handoff_agent.checks.smoke:SmokeCheck"}}
ON_B = {"check": {"slow": "handoff_agent.checks.loads:LoadsCheck"}}


def delivery_of(bundle: bytes) -> bytes:
    """A local agent's signed-delivery body for ``bundle`` (model "m")."""
    env = {
        "format": 1,
        "source": "test-source",
        "local": {
            "model": "m",
            "number": 1,
            "pushed_by": "zoe",
            "verdict": {"verdict": "pass", "reasons": []},
        },
        "bundle_digest": hashlib.sha256(bundle).hexdigest(),
        "audit": chain(),
    }
    out = io.BytesIO()
    write_tar(out, [("envelope.json", json.dumps(env).encode()), ("bundle.tar", bundle)])
    return out.getvalue()


def slow_run(agent: RunningAgent) -> dict:
    return agent.sql(
        "SELECT status, claimed_by, claimed_until FROM check_runs WHERE check_name = 'slow'"
    )[0]


def test_a_check_held_by_a_replica_killed_for_good_is_run_by_the_other(tmp_path, backend):
    if backend.postgres is None:
        pytest.skip("replicas share a PostgreSQL database")
    policy = tmp_path / "policy.toml"
    trusted = 'trusted_types = ["handoff_agent.hostile.BigBatches"]'
    policy.write_text(POLICY.format(revalidate="true").replace("trusted_types = []", trusted))
    url = backend.database_url()
    blob_args, blob_env = backend.blob_store(tmp_path / "shared")  # one bucket for both

    def replica(name: str, plugins: dict) -> RunningAgent:
        args = ["--role", "central", "--policy", str(policy), *blob_args, LEASE]
        args += ['--HandoffAgent.checks=["loads", "slow"]', "--HandoffAgent.check_timeout=600"]
        r = RunningAgent(tmp_path / name, tmp_path / f"rt-{name}", args, plugins, url, env=blob_env)
        r.start()
        return r

    a = replica("a", ON_A)
    b = None
    try:
        # Given replica a runs the version's slow check, which hangs there
        X = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 3)), columns=list("abc"))
        y = (X["a"] > 0).astype(int)
        model = hostile.BigBatches(limit=10).fit(X, y)
        status, body = deliver(a, delivery_of(bundle_of(model, X, y)))
        assert status == 201, body
        path = "/api/v1/models/m/versions/1"

        def slow_running_at_a() -> bool:
            state = {c["name"]: c["status"] for c in a.request("GET", path)[1]["checks"]}
            return state == {"loads": "pass", "slow": "running"}

        until(slow_running_at_a, timeout=60, what="a running the slow check")
        a_id = (tmp_path / "a" / "agent-id").read_text().strip()
        # and replica b joins: while a lives, a renews its claim and b leaves the run alone
        b = replica("b", ON_B)
        before = slow_run(a)["claimed_until"]
        until(lambda: slow_run(a)["claimed_until"] > before, timeout=30, what="a renewing")
        assert slow_run(a)["claimed_by"] == a_id
        # When a is killed and never comes back
        a.kill9()
        # Then b takes the run over once its claim lapses, and the version gets its verdict
        body = wait_checked(b, "m", 1, timeout=60)
        assert body["status"] == "passed", body
        checks = {c["name"]: c for c in body["checks"]}
        assert checks["slow"]["status"] == "pass"
        assert checks["slow"]["message"].startswith("Loads")  # b's check ran it, not a's
        stage = lambda: b.request("GET", path)[1]["stage"] == "validated"  # noqa: E731
        until(stage, timeout=30, what="central's verdict moving the version to validated")
        b_id = (tmp_path / "b" / "agent-id").read_text().strip()
        assert slow_run(b)["claimed_by"] == b_id
        taken = [
            json.loads(r["payload"])
            for r in b.sql("SELECT payload FROM audit WHERE action = 'check.reclaimed'")
        ]
        assert taken == [{"check": "slow", "from": a_id, "by": b_id, "was": "running"}]
        p = b.cli("audit", "verify", "--agent-role", "central")
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        for r in (b, a):
            if r is not None and r.proc.poll() is None:
                r.stop()
