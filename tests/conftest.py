"""Fixtures: a real agent process on a free port with its own home and runtime dir."""

from __future__ import annotations

import pytest
from support import RunningAgent


@pytest.fixture
def agent_factory(tmp_path):
    started: list[RunningAgent] = []

    def make(*args: str, home=None) -> RunningAgent:
        a = RunningAgent(home or tmp_path / f"home{len(started)}", tmp_path / "rt", list(args))
        a.start()
        started.append(a)
        return a

    yield make
    for a in started:
        a.stop()


@pytest.fixture
def agent(agent_factory) -> RunningAgent:
    """A fresh agent for one test."""
    return agent_factory()


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory):
    """One agent for a module's read-mostly tests."""
    root = tmp_path_factory.mktemp("shared")
    a = RunningAgent(root / "home", root / "rt", [])
    a.start()
    yield a
    a.stop()
