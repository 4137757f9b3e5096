"""The bundle writer's output is what the agent's validator accepts, and it is stable."""

from __future__ import annotations

import pandas as pd
import pytest

from handoff_agent import bundle
from jupyter_handoff import bundle_writer as bw
from jupyter_handoff.data import prepare
from jupyter_handoff.fingerprint import fingerprint


def build(model, X, y, max_rows=10_000):
    members, fps, sig = prepare(X, y, None, None, max_rows, 100)
    name, data = bw.serialize_model(model, "pickle")
    members[name] = data
    manifest = {
        "format_version": 1,
        "name": "m",
        "serialization": "pickle",
        "data": fps,
        "signature": sig,
    }
    return bw.assemble(members, manifest)


def write(b, path):
    with open(path, "wb") as f:
        for p in b.parts:
            f.write(p)
    return path


def test_agent_accepts_what_the_writer_writes(tmp_path, data, model):
    X, y = data
    b = build(model, X, y)
    manifest = bundle.validate(write(b, tmp_path / "b.tar"), expected_name="m")
    assert set(manifest["files"]) == {"model.pkl", "data/X.parquet", "data/y.parquet"}


def test_same_inputs_same_bytes(data, model):
    X, y = data
    assert build(model, X, y).digest == build(model, X, y).digest


def test_stored_rows_are_bounded_but_fingerprint_covers_all(tmp_path, data, model):
    X, y = data
    b = build(model, X, y, max_rows=50)
    assert b.manifest["data"]["X"]["rows"] == len(X)
    assert b.manifest["data"]["X"]["stored_rows"] == 50
    path = write(b, tmp_path / "b.tar")
    import io
    import tarfile

    with tarfile.open(path) as tar:
        stored = pd.read_parquet(io.BytesIO(tar.extractfile("data/X.parquet").read()))
    assert len(stored) == 50


def test_fingerprint_ignores_index_but_not_values(data):
    X, _ = data
    shuffled_index = X.set_index(X.index + 1000)
    assert fingerprint(X)["fingerprint"] == fingerprint(shuffled_index)["fingerprint"]
    changed = X.copy()
    changed.iloc[0, 0] += 1
    assert fingerprint(X)["fingerprint"] != fingerprint(changed)["fingerprint"]
    assert fingerprint(X)["stats"]["f0"]["nulls"] == 0


@pytest.mark.parametrize("bad", [object(), "model", 3])
def test_non_models_refused(bad):
    from jupyter_handoff.errors import HandoffUsageError

    with pytest.raises(HandoffUsageError, match="not a model"):
        bw.check_model(bad)
