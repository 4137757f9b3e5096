"""The [deploy] policy keys: defaults, a full file, and one clear line for each mistake."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from handoff_agent import vocabulary
from handoff_agent.deploy_policy import DeployPolicy, LoadTestPolicy
from handoff_agent.policy import Policy

INTAKE = '[intake]\nsecrets = ["deploy-secret-Rk2Vn8Qp4Lx7Tz1Wc5Hb9"]\n'


def load(tmp_path, text: str) -> Policy:
    path = tmp_path / "policy.toml"
    path.write_text(INTAKE + text)
    return Policy.load(path)


def test_defaults_without_a_deploy_table(tmp_path):
    d = load(tmp_path, "").deploy
    assert d == DeployPolicy() == Policy().deploy
    assert d.schedule == (10.0,) and d.shadow is False
    assert d.loadtest == LoadTestPolicy()
    assert d.loadtest.concurrency == (1, 8, 32)
    # read as a mapping too, as serving.deploy merges it over its defaults
    assert {**{"canary_percent": 5.0, "x": 1}, **d}["canary_percent"] == 10.0
    assert d["shadow"] is False and d.keys()[-1] == "loadtest"
    with pytest.raises(KeyError):
        d["nope"]


def test_a_full_deploy_table(tmp_path):
    d = load(
        tmp_path,
        """
[deploy]
steps = [5, 25, 50]
step_seconds = 30
bake_seconds = 90.5
min_requests = 500
max_error_rate = 0.02
max_p99_ratio = 1.2
p99_slack_ms = 0
max_psi = 0.1
min_live_metric_ratio = 1
live_metric = "rmse"
min_labels = 10
shadow = true
min_agreement = 0.9
max_shadow_psi = 0.15

[deploy.loadtest]
max_p99_ratio = 1.1
min_throughput_ratio = 0.8
max_error_rate = 0
concurrency = [1, 4]
requests = 50
""",
    ).deploy
    assert d.steps == (5, 25, 50) and d.schedule == (5, 25, 50)
    assert (d.step_seconds, d.bake_seconds, d.min_requests) == (30, 90.5, 500)
    assert (d.max_p99_ratio, d.max_psi, d.live_metric, d.shadow) == (1.2, 0.1, "rmse", True)
    lt = d.loadtest
    assert (lt.max_p99_ratio, lt.min_throughput_ratio, lt.max_error_rate) == (1.1, 0.8, 0)
    assert (lt.concurrency, lt.requests) == ((1, 4), 50)


BAD = {
    "max_psi = -0.1": "[deploy] max_psi = -0.1: must be above 0 (alarm: PSI of canary "
    "predictions against production's; default 0.2).",
    "max_error_rate = 1.5": "[deploy] max_error_rate = 1.5: must be at most 1",
    'shadow = "yes"': '[deploy] shadow = "yes": must be true or false',
    "min_requests = 1.5": "[deploy] min_requests = 1.5: must be a whole number",
    "min_requests = true": "[deploy] min_requests = true: must be a whole number",
    'bake_seconds = "10m"': '[deploy] bake_seconds = "10m": must be a number',
    "max_p99_ratio = nan": "[deploy] max_p99_ratio = nan: must be a number",
    'live_metric = "f1"': '[deploy] live_metric = "f1": must be one of "auto", "accuracy", '
    '"mae", "rmse"',
    "steps = [5, 150]": "[deploy] steps = [5, 150]: 150 must be at most 100",
    "steps = 25": "[deploy] steps = 25: must be a list of numbers",
    "steps = [50, 25]": "[deploy] steps = [50, 25]: each step must be a larger share",
    "canary_percent = 10\nsteps = [5, 50]": "[deploy] gives both canary_percent and steps",
    "canary_percent = 0": "[deploy] canary_percent = 0: must be above 0",
    "max_pis = 0.2": "[deploy]: unknown key 'max_pis'; the keys are canary_percent, steps,",
    "[deploy.loadtest]\nmin_throughput_ratio = true": "[deploy.loadtest] min_throughput_ratio "
    "= true: must be a number",
    "[deploy.loadtest]\nconcurrency = [0, 8]": "[deploy.loadtest] concurrency = [0, 8]: 0 must "
    "be at least 1",
    "[deploy.loadtest]\nmax_p99 = 2": "[deploy.loadtest]: unknown key 'max_p99'",
}


@pytest.mark.parametrize("text", list(BAD))
def test_a_bad_value_is_one_clear_line(tmp_path, text):
    body = text if text.startswith("[deploy") else "[deploy]\n" + text
    with pytest.raises(ValueError) as info:
        load(tmp_path, body)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'policy.toml'}: ")
    assert BAD[text] in message


def test_empty_steps_mean_the_one_canary_percent(tmp_path):
    d = load(tmp_path, "[deploy]\nsteps = []\ncanary_percent = 20\n").deploy
    assert d.schedule == (20,)


def test_deploy_that_is_not_a_table_and_toml_that_does_not_parse(tmp_path):
    path = tmp_path / "top.toml"
    path.write_text("deploy = 3\n" + INTAKE)  # a key before any table: top level
    with pytest.raises(ValueError, match=r"\[deploy\] must be a table of keys, e.g. canary_"):
        Policy.load(path)
    # the example is one of the table's own keys (it named [deploy]'s in [monitor.actions])
    with pytest.raises(ValueError) as info:
        load(tmp_path, "[monitor]\nactions = 3\n")
    assert str(info.value).endswith(
        '[monitor.actions] must be a table of keys, e.g. error_rate = "notify".'
    ), info.value
    with pytest.raises(ValueError) as info:
        load(tmp_path, "[deploy\n")
    assert "is not valid TOML" in str(info.value) and "line" in str(info.value)


def test_central_refuses_a_bad_deploy_policy_at_start_with_that_line(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(INTAKE + "[deploy]\nmax_p99_ratio = 0\n")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    p = subprocess.run(
        [
            *(sys.executable, "-m", "handoff_agent", "serve", "--role", "central"),
            *("--policy", str(policy), f"--HandoffAgent.home={tmp_path / 'home'}"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [line for line in p.stderr.splitlines() if "max_p99_ratio" in line]
    assert len(lines) == 1 and "max_p99_ratio = 0: must be above 0" in lines[0]


def test_the_deploy_keys_are_served_with_the_vocabulary():
    policy = Policy(deploy=DeployPolicy(steps=(5, 50), shadow=True))
    meta = vocabulary.meta(
        policy.stages, role="central", policy="central", deploy=policy.deploy.describe()
    )
    deploy = meta["deploy"]
    assert deploy["slots"] == ["production", "canary", "shadow", "test", "previous"]
    assert set(deploy["guardrail_states"]) == {
        "baking",
        "paused",
        "step_up",
        "promote_ready",
        "rollback",
    }
    assert set(deploy["alarms"]) == {"error_rate", "p99_ratio", "psi", "live_metric_ratio"}
    keys = deploy["policy"]
    assert keys["steps"] == {
        "value": [5, 50],
        "default": [],
        "help": "linear canary: increasing shares in percent, one per step (replaces "
        "canary_percent)",
    }
    assert keys["shadow"]["value"] is True and keys["shadow"]["default"] is False
    assert keys["loadtest"]["concurrency"]["value"] == [1, 8, 32]
    assert all(len(k["help"]) > 10 for k in keys.values() if "help" in k)
