"""Model code runs sandboxed: hostile models pushed through a real agent get a verdict, the
agent keeps answering, and the escape they try does not happen."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import RunningAgent, forwarding_args, push_model, until, wait_checked

from handoff_agent import hostile

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
TOKEN = "sandbox-test-token-" + secrets.token_hex(16)


def start(root: Path, *args: str, env: dict | None = None) -> RunningAgent:
    """An agent started with extra environment variables (a token, as a user might set)."""
    root.mkdir(parents=True, exist_ok=True)
    a = RunningAgent(root / "home", root / "rt", list(args), env=env)
    a.start()
    return a


@pytest.fixture(scope="module")
def agent(tmp_path_factory, backend):
    a = start(
        tmp_path_factory.mktemp("sandbox"),
        "--HandoffAgent.check_timeout=30",
        "--HandoffAgent.sandbox_max_processes=64",
        env={"HANDOFF_TOKEN": TOKEN},
    )
    yield a
    a.stop()


CONFIGURED_TOKEN = "configured-token-" + secrets.token_hex(16)
UNUSED_TOKEN = "unused-env-token-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def rlimits_agent(tmp_path_factory, backend):
    # Its token set twice, as a user may: by configuration, which wins, and in the environment
    a = start(
        tmp_path_factory.mktemp("rlimits"),
        "--HandoffAgent.check_timeout=30",
        "--HandoffAgent.sandbox=rlimits",
        f"--HandoffAgent.token={CONFIGURED_TOKEN}",
        env={"HANDOFF_TOKEN": UNUSED_TOKEN},
    )
    yield a
    a.stop()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 3)), columns=list("abc"))
    return X, pd.Series(rng.integers(0, 2, 300))


def messages(body: dict) -> str:
    return "\n".join(c.get("message") or "" for c in body["checks"])


def marked(marker: str) -> list[int]:
    """Processes whose command line holds ``marker``, wherever they run."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def kill_marked(marker: str) -> None:
    """Teardown for a run without the sandbox: never leave a hostile model's children behind."""
    for pid in marked(marker):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@needs_bwrap
def test_model_cannot_reach_the_network(agent, data):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    try:
        port = listener.getsockname()[1]
        v = push_model(agent, hostile.CallsOut(port), "calls-out", X=data[0], y=data[1])
        body = wait_checked(agent, "calls-out", v.number)
        assert "network: blocked" in messages(body), messages(body)
        # A connect that succeeded would be queued on the listener by now.
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert body["status"] == "failed"
    assert agent.healthy()


@needs_bwrap
def test_model_sees_no_secret_of_the_agent(agent, data):
    # Given an agent started with its token in the environment, as a user may do
    pid = agent.proc.pid
    paths = [
        f"/proc/{pid}/environ",
        f"/proc/{pid}/cmdline",
        str(agent.runtime_file),
        str(agent.home / "registry.db"),
        str(agent.home / "agent-id"),
    ]
    # When a model reads the agent's /proc and files
    v = push_model(agent, hostile.Snoops(paths), "snoops", X=data[0], y=data[1])
    body = wait_checked(agent, "snoops", v.number)
    # Then it saw none of them, and the token is nowhere in what it reports
    said = messages(body)
    assert "snooped:" in said, said
    for path in paths:
        assert f"{path}: unreadable" in said, said
    assert "READ" not in said and TOKEN not in said
    assert agent.token == TOKEN and agent.healthy()


@needs_bwrap
def test_each_check_worker_gets_its_share_of_the_cores_for_numeric_threads(tmp_path, data):
    # Given an agent whose two check workers run at once
    a = start(tmp_path, "--HandoffAgent.workers=2", "--HandoffAgent.checks=['loads']")
    try:
        # When a model reads its worker's environment
        v = push_model(a, hostile.Snoops(["/proc/self/environ"]), "env", X=data[0], y=data[1])
        said = messages(wait_checked(a, "env", v.number))
    finally:
        a.stop()
    # Then OpenMP, OpenBLAS and MKL may each start its share of the cores, not all of them
    share = max(1, (os.cpu_count() or 1) // 2)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        assert f"{name}={share}\\x00" in said, said


def test_agent_keeps_no_token_in_its_environment(agent):
    # The agent took its token from HANDOFF_TOKEN, and its /proc no longer shows it.
    assert agent.token == TOKEN
    environ = Path(f"/proc/{agent.proc.pid}/environ").read_bytes()
    assert TOKEN.encode() not in environ
    assert b"HANDOFF_TOKEN=" not in environ


def test_a_configured_token_leaves_no_token_in_the_environment_for_model_code(rlimits_agent, data):
    """HANDOFF_TOKEN unused (the configured token wins) stayed in the agent's environment,
    which a worker without bubblewrap could read and a retraining notebook inherited."""
    a = rlimits_agent
    assert a.token == CONFIGURED_TOKEN
    # When a model outside bubblewrap reads the agent's environment, and its own
    paths = [f"/proc/{a.proc.pid}/environ", "/proc/self/environ"]
    secrets_ = (UNUSED_TOKEN, CONFIGURED_TOKEN, "HANDOFF_TOKEN=")
    snoops = hostile.Snoops(paths, needles=secrets_)
    v = push_model(a, snoops, "env-snoops", X=data[0], y=data[1])
    said = messages(wait_checked(a, "env-snoops", v.number))
    # Then it read them, and neither token nor the variable is in them
    assert f"/proc/{a.proc.pid}/environ: READ" in said, said
    for secret in secrets_:
        assert secret not in said, said
    assert a.healthy()


def test_detached_agent_gets_no_secret_through_its_environment(tmp_path):
    from handoff_agent import runtime

    env = {
        "HANDOFF_TOKEN": TOKEN,
        "JUPYTERHUB_API_TOKEN": "hub-" + TOKEN,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        info = runtime.start_detached(home=str(tmp_path / "home"), log_path=tmp_path / "log")
    finally:
        for k, value in saved.items():
            if value is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = value
    try:
        environ = Path(f"/proc/{info['pid']}/environ").read_bytes()
        assert TOKEN.encode() not in environ
        assert info["token"] != TOKEN  # a fresh random one, published in the 0600 file
    finally:
        os.kill(info["pid"], signal.SIGTERM)


@needs_bwrap
def test_fork_bomb_is_bounded_and_its_children_end_with_the_job(agent, data):
    marker = f"0.{secrets.randbelow(10**12):012d}1"
    try:
        bomb = hostile.ForkBomb(300, marker)
        v = push_model(agent, bomb, "fork-bomb", X=data[0], y=data[1])
        body = wait_checked(agent, "fork-bomb", v.number)
        assert "fork bomb stopped after" in messages(body), messages(body)
        assert body["status"] == "failed"
        assert agent.healthy()
        until(lambda: not marked(marker), 30, "the bomb's children to be gone")
    finally:
        kill_marked(marker)


@pytest.mark.parametrize("which", ["agent", "rlimits_agent"])
def test_huge_file_is_stopped(request, which, data):
    agent = request.getfixturevalue(which)
    name = f"huge-file-{which}".replace("_", "-")
    v = push_model(agent, hostile.HugeFile(), name, X=data[0], y=data[1])
    body = wait_checked(agent, name, v.number)
    assert "File too large" in messages(body), messages(body)
    assert body["status"] == "failed"
    assert agent.healthy()


@needs_bwrap
def test_orphan_holding_stderr_does_not_stall_the_queue(tmp_path, data):
    marker = f"0.{secrets.randbelow(10**12):012d}3"
    one = start(tmp_path, "--HandoffAgent.workers=1", "--HandoffAgent.check_timeout=30")
    try:
        v = push_model(one, hostile.Orphan(marker), "orphan", X=data[0], y=data[1])
        body = wait_checked(one, "orphan", v.number)
        assert body["status"] in ("passed", "warned", "failed"), body
        # The one worker slot is free again: the next version is checked too
        after = push_model(one, hostile.ReturnsNaN(), "after-orphan", X=data[0], y=data[1])
        assert wait_checked(one, "after-orphan", after.number)["status"] == "failed"
        until(lambda: not marked(marker), 30, "the orphan to be gone")
        assert one.healthy()
    finally:
        kill_marked(marker)
        one.stop()


@pytest.mark.parametrize("which", ["agent", "rlimits_agent"])
def test_junk_on_the_protocol_ends_the_check_with_a_message(request, which, data):
    agent = request.getfixturevalue(which)
    name = f"junk-{which}".replace("_", "-")
    v = push_model(agent, hostile.Junk(), name, X=data[0], y=data[1])
    body = wait_checked(agent, name, v.number)
    assert "broke the check protocol" in messages(body), messages(body)
    assert "this is not json" in messages(body)
    assert body["status"] == "failed"
    assert agent.healthy()


def test_big_results_reach_a_verdict(agent):
    """Result lines far over asyncio's 64 KiB line limit: 10 classes and 64 features, and a
    model on 800 columns."""
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    digits = load_digits(as_frame=True)
    X, y = digits.data, digits.target
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    rng = np.random.default_rng(1)
    wide_X = pd.DataFrame(rng.normal(size=(400, 800)), columns=[f"c{i}" for i in range(800)])
    wide_y = pd.Series((wide_X["c0"] > 0).astype(int))
    wide = LogisticRegression(max_iter=200).fit(wide_X, wide_y)
    pushed = [
        push_model(agent, forest, "digits-forest", X=X, y=y),
        push_model(agent, wide, "wide-logreg", X=wide_X, y=wide_y),
    ]
    for name, v in zip(["digits-forest", "wide-logreg"], pushed, strict=True):
        body = wait_checked(agent, name, v.number, timeout=300)
        assert body["status"] in ("passed", "warned", "failed"), body
        assert all(c["status"] not in ("queued", "running") for c in body["checks"]), body
        assert "protocol" not in messages(body), messages(body)


# -- central ----------------------------------------------------------------------------------

CENTRAL_SECRET = "central-intake-" + secrets.token_hex(16)
POLICY = f"""
[intake]
secrets = ["{CENTRAL_SECRET}"]
trusted_types = ["handoff_agent.hostile.Snoops"]
revalidate = true

[sandbox]
require = true
"""


def start_pair(tmp_path: Path, *central_args: str) -> tuple[RunningAgent, RunningAgent]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    central = start(tmp_path / "c", "--role", "central", "--policy", str(policy), *central_args)
    local = start(
        tmp_path / "l",
        *forwarding_args(central, CENTRAL_SECRET, owner=None),
        "--HandoffAgent.forward_on=['pass', 'warn', 'fail']",
    )
    return local, central


def central_version(central: RunningAgent, name: str) -> dict:
    def checked():
        status, body = central.request("GET", f"/api/v1/models/{name}/versions/1")
        done = status == 200 and body["status"] not in ("checking", "pushed", "received")
        return body if done and body["reports"] else None

    return until(checked, 180, f"central to check {name}")


def test_central_requiring_the_sandbox_refuses_to_run_model_code_without_it(tmp_path, data):
    from sklearn.linear_model import LogisticRegression

    local, central = start_pair(tmp_path, "--HandoffAgent.bwrap_path=/nonexistent/bwrap")
    try:
        assert central.request("GET", "/api/v1/health", token=False)[1]["sandbox"] == "unavailable"
        X, y = data
        push_model(local, LogisticRegression().fit(X, y), "needs-sandbox", X=X, y=y)
        body = central_version(central, "needs-sandbox")
        assert body["status"] == "failed", body
        for check in body["checks"]:
            assert check["status"] == "error", check
            assert "[sandbox] require = true" in check["message"], check
            assert "apt-get install bubblewrap" in check["message"], check
        assert central.healthy() and "[sandbox] require = true" in central.read_log()
    finally:
        local.stop()
        central.stop()


@needs_bwrap
def test_model_at_central_sees_no_secret_of_central(tmp_path, data):
    local, central = start_pair(tmp_path)
    try:
        assert central.request("GET", "/api/v1/health", token=False)[1]["sandbox"] == "bwrap"
        pid = central.proc.pid
        paths = [
            f"/proc/{pid}/environ",
            str(central.runtime_file),
            str(tmp_path / "policy.toml"),
            str(central.home / "registry.db"),
        ]
        X, y = data
        push_model(local, hostile.Snoops(paths), "snoops-central", X=X, y=y)
        body = central_version(central, "snoops-central")
        said = messages(body)
        assert "snooped:" in said, said
        for path in paths:
            assert f"{path}: unreadable" in said, said
        assert CENTRAL_SECRET not in said and central.token not in said
        assert central.healthy()
    finally:
        local.stop()
        central.stop()
