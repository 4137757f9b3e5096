"""What central's gate takes from a push and what its policy decides: an analyst's --gate
override loosens the local agent's checks, never central's (unless `[intake] gate_overrides`),
and a check central requires (`[intake] required_checks`) cannot be skipped by pushing less."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from support import handoff_cli, push_model, until, wait_checked
from test_pipeline_central import start_pair
from test_pipeline_delivery import count, deliver, envelope

LOOSE = {"fairness.max_dp_diff": 1.0, "fairness.max_eo_diff": 1.0}


def biased():
    """A model whose approvals follow gender: the fairness check fails it on its defaults."""
    rng = np.random.default_rng(3)
    gender = pd.Series(np.where(rng.random(600) < 0.5, "f", "m"), name="gender")
    X = pd.DataFrame({"spend": rng.normal(size=600), "g": (gender == "m").astype(float)})
    y = pd.Series(((X["g"] + 0.3 * X["spend"]) > 0.5).astype(int), name="approved")
    return LogisticRegression().fit(X, y), X, y, gender


def central_stage(central) -> str | None:
    status, body = central.request("GET", "/api/v1/models/credit/versions/1")
    return body["stage"] if status == 200 and body["stage"] != "received" else None


@pytest.mark.parametrize("honoured", [False, True], ids=["central_policy", "gate_overrides"])
def test_a_loosened_fairness_gate_passes_locally_and_central_judges_by_its_policy(
    tmp_path, honoured
):
    local, central = start_pair(
        tmp_path, intake="gate_overrides = true" if honoured else "",
        local_args=["--HandoffAgent.checks=['loads', 'fairness']"],
    )  # fmt: skip
    try:
        model, X, y, gender = biased()
        v = push_model(local, model, "credit", X=X, y=y, sensitive=[gender], gate=LOOSE)
        mine = wait_checked(local, "credit", v.number)
        fairness = next(c for c in mine["checks"] if c["name"] == "fairness")
        assert fairness["status"] == "pass" and mine["status"] == "passed", mine
        stage = until(lambda: central_stage(central), timeout=180, what="central's verdict")
        at_central = central.request("GET", "/api/v1/models/credit/versions/1")[1]
        theirs = next(c for c in at_central["checks"] if c["name"] == "fairness")
        assert at_central["manifest"]["gate"] == LOOSE  # recorded either way
    finally:
        local.stop()
        central.stop()
    if honoured:
        assert (stage, theirs["status"]) == ("validated", "pass"), at_central
    else:
        # IT's thresholds: the bias the analyst's override let through is refused there
        assert (stage, theirs["status"]) == ("rejected", "fail"), at_central
        assert "dp_diff" in theirs["message"], theirs
        assert at_central["stages"][-1]["comment"] == "central checks: fail"


def test_a_central_that_requires_fairness_refuses_a_version_pushed_without_sensitive(tmp_path):
    local, central = start_pair(
        tmp_path, intake='required_checks = ["fairness"]',
        local_args=["--HandoffAgent.checks=['loads', 'fairness']"],
    )  # fmt: skip
    try:
        model, X, y, _ = biased()
        v = push_model(local, model, "credit", X=X, y=y)  # no --sensitive: fairness skips
        mine = wait_checked(local, "credit", v.number)
        assert mine["status"] == "passed", mine  # the local agent does not require it
        stage = until(lambda: central_stage(central), timeout=180, what="central's verdict")
        at_central = central.request("GET", "/api/v1/models/credit/versions/1")[1]
    finally:
        local.stop()
        central.stop()
    assert stage == "rejected", at_central
    reasons = at_central["verdict"]["reasons"]
    assert reasons[0].startswith("fairness: required, but skipped: "), reasons


def test_a_required_check_the_agent_does_not_run_stops_central_in_one_line(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[intake]\nrequired_checks = ["fairnes"]\n')
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    out = handoff_cli(
        env, "serve", "--role", "central", "--home", str(tmp_path / "central"),
        "--policy", str(policy), timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = [x for x in out.stderr.splitlines() if "fairnes'" in x]
    assert "Required checks ['fairnes'] are not among the checks this agent runs" in line
    assert not (tmp_path / "rt" / "handoff-central.json").exists()
    # a misspelt check in the gate's thresholds would leave the real one at its defaults
    out = handoff_cli(
        env, "serve", "--home", str(tmp_path / "local"),
        "--GatePolicy.thresholds={'fairnes': {'max_dp_diff': 0.05}}", timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = [x for x in out.stderr.splitlines() if "fairnes'" in x]
    assert "c.GatePolicy.thresholds names ['fairnes'], which no registered check is" in line


def test_a_delivery_whose_overrides_central_cannot_apply_is_refused_saying_which(tmp_path):
    """Central judging with the pushed overrides checks those of its checks as a push is
    checked: a setting a check does not declare, or a value of the wrong type, refuses the
    delivery (the sender's outbox shows why) instead of failing its checks. One of a check
    central does not run loosens nothing there: taken. Without ``gate_overrides`` they are
    recorded, not applied, and the delivery is taken."""
    local, central = start_pair(tmp_path, intake="gate_overrides = true")
    try:
        for gate, said in (
            ({"fairness.max_dp_dif": 1.0}, "fairness has no setting 'max_dp_dif'"),
            ({"fairness.max_dp_diff": "lenient"}, "fairness.max_dp_diff must be a number"),
        ):
            status, err = deliver(central, envelope("credit", gate=gate))
            assert status == 400 and said in err["error"]["message"], err
        assert count(central, "credit") == 0
        status, _ = deliver(central, envelope("credit", gate={"bias2.max_gap": 1.0}))
        assert status in (200, 201, 202) and count(central, "credit") == 1
    finally:
        local.stop()
        central.stop()
    (tmp_path / "ignored").mkdir()
    local, central = start_pair(tmp_path / "ignored")
    try:
        status, _ = deliver(central, envelope("credit", gate={"fairnes.max_dp_diff": 1.0}))
        assert status in (200, 201, 202) and count(central, "credit") == 1
    finally:
        local.stop()
        central.stop()
