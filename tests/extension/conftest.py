"""Notebook-side fixtures: an IPython shell with the extension, talking to a real agent."""

from __future__ import annotations

import pandas as pd
import pytest
from IPython.testing.globalipapp import get_ipython
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from jupyter_handoff import config


@pytest.fixture
def settings(monkeypatch):
    """Fresh notebook settings for each test, never auto-starting an agent unless asked."""
    monkeypatch.setattr(config, "_instance", config.Handoff(auto_start=False))
    return config._instance


@pytest.fixture
def connected(agent, settings, monkeypatch):
    """The notebook side finds ``agent`` through its runtime file, as a user's would."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(agent.runtime_dir))
    return agent


@pytest.fixture(scope="session")
def shell():
    ip = get_ipython()
    ip.run_line_magic("load_ext", "jupyter_handoff")
    return ip


@pytest.fixture(scope="session")
def data():
    X, y = make_classification(n_samples=600, n_features=5, random_state=0)
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    X["gender"] = (X["f0"] > 0).astype(int)
    return X, pd.Series(y, name="target")


@pytest.fixture(scope="session")
def model(data):
    X, y = data
    return LogisticRegression(max_iter=500).fit(X, y)
