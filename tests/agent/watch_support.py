"""Shared pieces of the watch tests: a data file, a retraining notebook, polling a watch."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
from support import push_model, until, wait_checked

RETRAIN = """
import pandas as pd
import jupyter_handoff
from sklearn.linear_model import LogisticRegression
df = pd.read_parquet(handoff_source)
X, y = df[list("abcd")], df["y"]
clf = LogisticRegression(C=C).fit(X, y)
v = jupyter_handoff.push(clf, "churn", X=X, y=y, message="retrain: " + handoff_trigger["change"])
print("pushed", v.number)
"""


def frame(rows: int, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(rows, 4)) + shift, columns=list("abcd"))
    return X.assign(y=(X["a"] + X["b"] > 2 * shift).astype(int))


def retrain_notebook(path: Path) -> Path:
    """A notebook with a ``parameters`` cell, as papermill users write them."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("handoff_source = None\nC = 1.0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(RETRAIN)]
    nbformat.write(nb, path)
    return path


def watch(agent, **body) -> dict:
    status, out = agent.request("POST", "/api/v1/watches", body)
    assert status == 201, out
    return out


def check(agent, source_id: int) -> dict:
    status, out = agent.request("POST", f"/api/v1/watches/{source_id}/check", {})
    assert status == 200, out
    return out


def triggers(agent, source_id: int) -> list[dict]:
    return agent.request("GET", f"/api/v1/watches/{source_id}")[1]["triggers"]


def finished_retrain(agent, source_id: int, timeout: float = 240) -> dict:
    def done():
        rows = [t for t in triggers(agent, source_id) if t["action"] == "retrain"]
        return rows and rows[-1]["state"] in ("done", "failed") and rows[-1]

    return until(done, timeout, "the retraining notebook to finish", every=0.5)


def read_bytes(pid: int) -> int:
    """Bytes the agent's threads have read through read(2) and its kin (files and sockets),
    without its workers: the process's own counter adds those of the children it reaped."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{tid}/io") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
    return total


def push_forest(agent) -> dict:
    """A version whose bundle is several MB: a forest fitted to random labels grows deep."""
    from sklearn.ensemble import RandomForestClassifier

    df = frame(2000)
    X, y = df[list("abcd")], np.random.default_rng(1).integers(0, 2, len(df))
    forest = RandomForestClassifier(100, random_state=0).fit(X, y)
    v = push_model(agent, forest, "churn", X=X, y=y, reference=X)
    return wait_checked(agent, "churn", v.number)
