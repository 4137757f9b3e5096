"""The bundle writer's output is what the agent's validator accepts, and it is stable."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

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


def test_unfitted_models_refused():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from jupyter_handoff.errors import HandoffUsageError

    for unfitted in (
        RandomForestClassifier(),
        make_pipeline(StandardScaler(), LogisticRegression()),
    ):
        with pytest.raises(HandoffUsageError, match="is not fitted"):
            bw.check_model(unfitted)

    class DuckModel:  # not sklearn: fit() sets attributes ending in "_"
        def fit(self, X, y):
            self.coef_ = 1
            return self

        def predict(self, X):
            return X

    with pytest.raises(HandoffUsageError, match="is not fitted"):
        bw.check_model(DuckModel())
    bw.check_model(DuckModel().fit(None, None))


@pytest.mark.parametrize(
    ("X", "kind", "columns"),
    [
        (["good film", "bad film", None], "text", ["text"]),
        (pd.Series(["a b", "c"], name="review"), "text", ["review"]),
        (np.array(["a b", "c"]), "text", ["text"]),
        (np.arange(6.0).reshape(3, 2), "array", ["x0", "x1"]),
        (pd.DataFrame({"a": [1, 2]}), None, ["a"]),
    ],
)
def test_input_kind_in_the_signature(tmp_path, X, kind, columns):
    members, _, sig = prepare(X, None, None, X, 100, 100)
    assert sig.get("input") == kind
    assert [c["name"] for c in sig["columns"]] == columns
    stored = pd.read_parquet(io.BytesIO(members["data/X.parquet"]))
    assert list(stored.columns) == columns and len(stored) == len(X)
    ref = pd.read_parquet(io.BytesIO(members["data/reference_X.parquet"]))
    assert list(ref.columns) == columns


def test_sensitive_outside_the_model_features_is_kept_out_of_X(data):
    X, y = data
    g = np.asarray(X["gender"])
    members, fps, sig = prepare(
        X, y, ["gender"], X, 100, 100, features=["f0", "f1", "f2", "f3", "f4"]
    )
    assert "gender" not in [c["name"] for c in sig["columns"]]
    assert "gender" not in pd.read_parquet(io.BytesIO(members["data/reference_X.parquet"])).columns
    assert fps["sensitive"]["schema"] == [{"name": "gender", "dtype": "int64"}]
    _, fps, _ = prepare(X, y, [pd.Series(g, name="sex")], None, 100, 100)
    assert fps["sensitive"]["schema"][0]["name"] == "sex"


def test_text_x_needs_text_reference():
    from jupyter_handoff.errors import HandoffUsageError

    with pytest.raises(HandoffUsageError, match="X is text but the reference data is not"):
        prepare(["a b", "c"], None, None, pd.DataFrame({"a": [1], "b": [2]}), 100, 100)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_identity_follows_commits_and_checkouts(tmp_path):
    # Given a notebook in a git repository (asked once per state of HEAD, then remembered)
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.email=a@b.c", "-c", "user.name=A"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], check=True)
    notebook = str(repo / "nb.ipynb")

    def head() -> str:
        return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout

    first = bw.git_identity(notebook)
    assert first == {"commit": head().strip(), "repo": str(repo.resolve())}
    assert bw.git_identity(notebook) == first
    # When a commit, a new branch, a detached checkout and packed refs move HEAD
    steps = [
        ["commit", "-q", "--allow-empty", "-m", "two"],
        ["checkout", "-q", "-b", "other"],
        ["commit", "-q", "--allow-empty", "-m", "three"],
        ["checkout", "-q", "--detach", "HEAD~2"],
        ["checkout", "-q", "other"],
        ["pack-refs", "--all"],
        ["commit", "-q", "--allow-empty", "-m", "four"],
    ]
    for step in steps:
        subprocess.run([*git, *step], check=True)
        # Then each push names the commit git names
        assert bw.git_identity(notebook)["commit"] == head().strip(), step
    # And outside any repository there is none
    assert bw.git_identity(str(tmp_path / "nb.ipynb")) is None


def test_numeric_stats_are_describes_values():
    # The fingerprint's statistics are what describe() gives, without its quantiles
    frame = pd.DataFrame(
        {
            "f": [0.5, np.nan, 2.25, -1.0],
            "i": [3, 1, 4, 1],
            "n": pd.array([1, None, 3, None], dtype="Int64"),
            "empty": [np.nan] * 4,
            "b": [True, False, True, True],
        }
    )
    stats = fingerprint(frame)["stats"]
    for col in ("f", "i", "n", "empty"):
        desc = frame[col].describe()
        for k in ("mean", "std", "min", "max"):
            want = None if pd.isna(desc[k]) else float(desc[k])
            assert stats[col][k] == want, (col, k)
    assert stats["b"] == {"nulls": 0, "mean": None, "std": None, "min": None, "max": None}


# What Handoff gave these arrays before a frame of one dtype took the one-block path
PINNED = {
    "float64": "6f123c3837f2be4bd2f59d1ea45a0a3b3c6cd9363bcc4dde0aa76abfde2a884d",
    "float32": "5cb8d70968286b8826a31536e2ec0dd0b7bd065a17fde2965290b6665d57f250",
    "int64": "43d86222ded7905b0884d60d96d9a1a6149648e8ec116d8e8bdbd8fbb40d1b64",
    "uint8": "c2f4c22e7191f4656f3f6178f5ad63ed05ba4f8beaf0281848aec590bea3a823",
    "bool": "c7648bf54887f712257a73570fe1580f8189716b967df2a2dfba6438b7df44eb",
}


@pytest.mark.parametrize("dtype", sorted(PINNED))
def test_an_array_keeps_its_fingerprint_and_its_sample_reads_back(dtype):
    # Given a 2-D array of one dtype, as analysts push them, floats with a missing value
    values = (np.arange(60).reshape(20, 3) % 7).astype(dtype)
    if dtype.startswith("float"):
        values[4, 1] = np.nan
    # When it is prepared for a push
    members, fps, _ = prepare(values, np.arange(20) % 2, None, None, 1000, 1000)
    # Then it has the fingerprint earlier versions gave the same data (lineage still says
    # "same data" across an upgrade), statistics that describe() agrees with, and the stored
    # sample reads back as the array's frame
    frame = pd.DataFrame(values, columns=["x0", "x1", "x2"])
    assert fps["X"]["fingerprint"] == PINNED[dtype]
    if dtype != "bool":
        assert fps["X"]["stats"]["x1"]["max"] == float(frame["x1"].max())
        assert fps["X"]["stats"]["x1"]["nulls"] == int(frame["x1"].isna().sum())
    stored = pd.read_parquet(io.BytesIO(members["data/X.parquet"]))
    pd.testing.assert_frame_equal(stored, frame)
    y = pd.read_parquet(io.BytesIO(members["data/y.parquet"]))
    assert y["y"].tolist() == (np.arange(20) % 2).tolist()


def forest():
    from sklearn.ensemble import RandomForestClassifier

    X, y = np.random.default_rng(0).normal(size=(300, 4)), np.arange(300) % 2
    return RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)


def test_the_pickled_pieces_are_the_pickle_and_the_sink_gets_the_bundle(tmp_path):
    import hashlib
    import os
    import pickle

    # Given a model whose arrays pickle writes as out-of-frame buffers (views, not copies)
    model = forest()
    member, pieces = bw.serialize_model(model, "pickle")
    assert b"".join(bytes(p) for p in pieces.parts) == pickle.dumps(model, protocol=5)
    manifest = {"format_version": 1, "name": "m", "serialization": "pickle"}
    # When the bundle is assembled into a file while it is hashed
    fd = os.open(tmp_path / "entry", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        b = bw.assemble({member: pieces}, manifest, sink=fd)
    finally:
        os.close(fd)
    # Then the file holds exactly the bundle, whose digest is that of the same bytes in one
    # buffer, and the agent accepts it
    written = (tmp_path / "entry").read_bytes()
    assert b.spooled and written == b"".join(bytes(p) for p in b.parts)
    assert not b.digest, "the agent hashes what it follows; the kernel skips that pass"
    assert hashlib.sha256(written).hexdigest() == b.hashed().digest
    assert b.digest == bw.assemble({member: pickle.dumps(model, protocol=5)}, manifest).digest
    assert bundle.validate(tmp_path / "entry", expected_name="m")["files"][member]
    # And the agent, reading it as it comes, finds it laid out as written, with the manifest
    # digest the kernel declares: so each byte is pinned without a whole-bundle digest
    check = bundle.StreamCheck("m")
    for at in range(0, len(written), 7000):
        check.feed(written[at : at + 7000])
    assert check.laid_out(b.manifest_digest) and check.result()["files"][member]
    assert not check.laid_out(hashlib.sha256(b"another manifest").hexdigest())


def test_a_sink_that_cannot_be_written_leaves_the_bundle_whole(tmp_path):
    import os

    (tmp_path / "entry").write_bytes(b"")
    fd = os.open(tmp_path / "entry", os.O_RDONLY)  # every write fails (EBADF)
    try:
        member, pieces = bw.serialize_model(forest(), "pickle")
        b = bw.assemble({member: pieces}, {"format_version": 1, "name": "m"}, sink=fd)
    finally:
        os.close(fd)
    assert not b.spooled  # so the client sends it over HTTP instead
    assert b.size == sum(len(p) for p in b.parts) and b.hashed().digest
