"""Hostile or broken models get a failed check; the agent stays healthy and keeps answering."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from support import push_model, wait_checked

from handoff_agent import hostile


@pytest.fixture(scope="module")
def strict_agent(tmp_path_factory, backend):
    from support import RunningAgent

    root = tmp_path_factory.mktemp("hostile")
    a = RunningAgent(root / "home", root / "rt", ["--HandoffAgent.check_timeout=15"])
    a.start()
    yield a
    a.stop()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 3)), columns=list("abc"))
    return X, pd.Series(rng.integers(0, 2, 300))


def first_failure(body: dict) -> dict:
    return next(c for c in body["checks"] if c["status"] in ("fail", "error"))


@pytest.mark.parametrize(
    ("model", "says"),
    [
        (hostile.Hangs(), "did not finish within 15 s"),
        (hostile.Greedy(), "MemoryError"),
        (hostile.Exits(), "The worker exited with code"),
        (hostile.ReturnsNaN(), "NaN"),
        (hostile.WrongShape(), "rows"),
        (hostile.Raises(), "this model is broken"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else "",
)
def test_hostile_model_fails_a_check(strict_agent, data, model, says):
    X, y = data
    name = type(model).__name__.lower()
    v = push_model(strict_agent, model, name, X=X, y=y)
    body = wait_checked(strict_agent, name, v.number)
    failed = first_failure(body)
    assert says in failed["message"], (failed, failed.get("result"))
    assert body["status"] == "failed"
    assert strict_agent.healthy()


def test_agent_answers_while_a_check_hangs(strict_agent, data):
    X, y = data
    v = push_model(strict_agent, hostile.Hangs(), "hangs-again", X=X, y=y)
    path = f"/api/v1/models/hangs-again/versions/{v.number}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        body = strict_agent.request("GET", path)[1]
        if any(c["status"] == "running" for c in body["checks"]):
            break
        time.sleep(0.05)
    # While the worker is stuck, the API answers, and other reads work.
    assert any(c["status"] == "running" for c in body["checks"])
    assert strict_agent.healthy()
    assert strict_agent.request("GET", "/api/v1/models")[0] == 200
    wait_checked(strict_agent, "hangs-again", v.number)
