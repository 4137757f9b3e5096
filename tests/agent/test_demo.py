"""`jupyter handoff demo` follows the outbox: a refused delivery ends it at once, with why. The
demo's run through canary, observed split, promotion and the guardrails' rollback is README
command 1, which CI runs on a fresh venv and checks with .ci/check_demo.py.

The demo starts detached agents and writes to the Jupyter data and runtime dirs, so it runs
as a subprocess with its own HOME and Jupyter dirs: it cannot see or touch the user's agents.
"""

from __future__ import annotations

import json
import os
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
    # The demo's whole story (split, promotion, rollback, production back) is checked there,
    # on its output and the central it leaves: .ci/check_demo.py, not run again here
    assert ".ci/check_demo.py" in ci and (ROOT / ".ci" / "check_demo.py").exists()
