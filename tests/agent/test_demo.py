"""`jupyter handoff demo` goes from the notebook to production and back: canary, observed split,
promotion after a clean bake, and the guardrails' rollback of a degraded version. It follows the
outbox: a refused delivery ends it at once, with why.

The demo starts detached agents and writes to the Jupyter data and runtime dirs, so it runs
as a subprocess with its own HOME and Jupyter dirs: it cannot see or touch the user's agents.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def isolated_env(tmp_path: Path) -> dict:
    dirs = {
        "HOME": tmp_path / "home",
        "JUPYTER_DATA_DIR": tmp_path / "data",
        "JUPYTER_RUNTIME_DIR": tmp_path / "runtime",
        "JUPYTER_CONFIG_DIR": tmp_path / "config",
    }
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        **{k: str(v) for k, v in dirs.items()},
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
    }


def stop_agents(runtime_dir: Path) -> None:
    """The demo leaves its agents running, as it should for a user; a test stops them."""
    pids = []
    for role in ("local", "central"):
        f = runtime_dir / f"handoff-{role}.json"
        if f.exists():
            pid = json.loads(f.read_text())["pid"]
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
    deadline = time.monotonic() + 30
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
        time.sleep(0.1)
    for p in pids:
        os.kill(p, signal.SIGKILL)


def get(info: dict, path: str) -> dict:
    req = urllib.request.Request(
        info["url"] + path, headers={"Authorization": f"token {info['token']}"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def run_demo(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "jupyter"), "handoff", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )


@pytest.mark.timeout(900)
def test_the_demo_deploys_promotes_and_shows_the_guardrails_rolling_back(tmp_path):
    env = isolated_env(tmp_path)
    runtime_dir = Path(env["JUPYTER_RUNTIME_DIR"])
    try:
        p = run_demo(env)
        out = p.stdout + p.stderr
        central = json.loads((runtime_dir / "handoff-central.json").read_text())
        deployment = get(central, "/api/v1/models/churn/deployment")
        versions = {
            v["number"]: v for v in get(central, "/api/v1/models/churn/versions")["versions"]
        }
        last = max(versions)
        bad = get(central, f"/api/v1/models/churn/versions/{last}")
    finally:
        stop_agents(runtime_dir)

    assert p.returncode == 0, out
    # The split it observed: both versions answered, the canary near its 30%
    split = re.search(r"observed split churn:(\d+) (\d+)%, churn:(\d+) (\d+)%", out)
    assert split, out
    shares = {int(split[1]): int(split[2]), int(split[3]): int(split[4])}
    good = max(shares)
    assert 10 <= shares[good] <= 50, out  # 200 requests at 30%: far from both ends
    assert f"promoted: churn:{good} serves 100%" in out, out
    # The degraded version was rolled back by the guardrails, with the alarm as the reason
    assert last == good + 1 and bad["stage"] == "rollback", bad
    reason = bad["stages"][-1]["comment"]
    assert bad["stages"][-1]["by"] == "guardrails"
    assert reason.startswith("Canary error rate"), reason
    assert f"automatic rollback by guardrails: {reason}" in out, out
    # and production traffic is back on the good version
    assert f"traffic back: 50/50 requests answered by churn:{good}" in out, out
    slots = {s["slot"]: s for s in deployment["slots"]}
    assert "canary" not in slots
    assert (slots["production"]["version"], slots["production"]["traffic"]) == (good, 100.0)
    assert versions[good]["stage"] == "production"
    assert "canary, split, promotion and an automatic rollback all happened" in out, out


@pytest.mark.timeout(900)
def test_a_refused_delivery_ends_the_demo_with_the_reason_and_exit_1(tmp_path):
    env = isolated_env(tmp_path)
    # The local agent signs with a secret central does not hold, so central refuses the
    # delivery (a misconfigured destination, as a user could have).
    config = Path(env["JUPYTER_CONFIG_DIR"]) / "jupyter_handoff_serve_config.json"
    config.write_text(json.dumps({"CentralDestination": {"secret": secrets.token_urlsafe(32)}}))
    runtime_dir = Path(env["JUPYTER_RUNTIME_DIR"])
    try:
        p = subprocess.run(
            [str(Path(sys.executable).parent / "jupyter"), "handoff", "demo"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=840,
        )
        out = p.stdout + p.stderr
        local = json.loads((runtime_dir / "handoff-local.json").read_text())
        versions = get(local, "/api/v1/models/churn/versions")["versions"]
        latest = get(local, f"/api/v1/models/churn/versions/{versions[0]['number']}")
    finally:
        stop_agents(runtime_dir)

    assert p.returncode == 1, out
    (row,) = [f for f in latest["forwards"] if f["destination"] == "central"]
    assert row["state"] == "dead", row
    assert row["last_error"], row
    assert row["last_error"] in out, out  # the reason, as the outbox recorded it
    assert "Central did not take the version" in out, out
    assert "What to do:" in out, out
    assert "Gave up waiting" not in out, out  # it ended at once, not on a timeout
    assert "approved" not in out, out


def test_readme_command_1_is_what_ci_runs_on_a_fresh_venv():
    command = "pip install -e . && jupyter handoff demo"
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in (ROOT / "README.md").read_text()
    assert command in ci
    assert 'grep -q "automatic rollback by guardrails"' in ci
    assert 'grep -q "traffic back:"' in ci
