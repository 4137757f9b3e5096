"""What predicts inside a serving worker. A backend is loaded from the worker's job (the
bundle as an open file, central's trust list) and turns a DataFrame into named outputs.

``BACKENDS`` maps a name to its class; the server names the backend in each worker's job,
so another backend (ONNX) registers here and is chosen per version without touching the
worker. Runs only inside the sandboxed worker: the agent process never loads a model.
"""

from __future__ import annotations

import contextlib
import json
import tarfile
from typing import Protocol

from ..manifest import MANIFEST, data_member, model_member

SKOPS = model_member("skops")
X_MEMBER = data_member("X")


class Backend(Protocol):
    name: str
    manifest: dict

    @classmethod
    def load(cls, job: dict) -> Backend:
        """Load from ``job``: ``bundle`` (a readable file path), ``trusted_types``."""
        ...

    def predict(self, frame) -> dict[str, list]:
        """Named outputs, one entry per row: ``predict``, and ``predict_proba`` where the
        model has it."""
        ...


def read_bundle(path: str) -> tuple[dict, dict]:
    """The manifest and the raw members a backend needs (model file, evaluation sample)."""
    from ..bundle import DATA_MEMBERS

    out = {}
    with tarfile.open(path, mode="r:") as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        names = set(tar.getnames())
        for member in (SKOPS, *DATA_MEMBERS):
            if member in names:
                out[member] = tar.extractfile(member).read()
    return manifest, out


def _column(values) -> list:
    import numpy as np

    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        return [None if v != v else float(v) for v in arr.ravel().tolist()]  # NaN → null
    return arr.tolist()


class SkopsBackend:
    """The scikit-learn model itself, read from ``model.skops`` through the trust list
    given in the job (central's, never what the file asks for). Nothing is unpickled."""

    name = "skops"

    def __init__(self, model, manifest: dict, sample=None):
        self.model, self.manifest, self.sample = model, manifest, sample

    @classmethod
    def load(cls, job: dict) -> SkopsBackend:
        import io

        from ..trust import load_skops

        manifest, members = read_bundle(job["bundle"])
        if SKOPS not in members:
            raise ValueError("the bundle holds no model.skops; central serves only skops")
        model = load_skops(members[SKOPS], job.get("trusted_types") or ())
        sample = None
        if X_MEMBER in members:
            import pandas as pd

            sample = pd.read_parquet(io.BytesIO(members[X_MEMBER]))
        return cls(model, manifest, sample)

    def predict(self, frame) -> dict[str, list]:
        out = {"predict": _column(self.model.predict(frame))}
        if hasattr(self.model, "predict_proba"):
            # e.g. SVC without probability=True has the method but refuses
            with contextlib.suppress(AttributeError, NotImplementedError):
                out["predict_proba"] = self.model.predict_proba(frame).tolist()
        return out

    def nan_columns(self) -> list[str] | None:
        """The columns where this model takes a NaN, found by predicting the first evaluation
        row with that column blanked; None when there is no sample to try."""
        if self.sample is None or not len(self.sample):
            return None
        ok = []
        for col in self.sample.columns:
            row = self.sample.iloc[:1].copy()
            if row[col].dtype.kind not in "fc" and row[col].dtype != object:
                continue
            row[col] = None if row[col].dtype == object else float("nan")
            try:
                self.model.predict(row)
            except Exception:  # the model refuses it: so will the server
                continue
            ok.append(str(col))
        return ok


# A name maps to a class, or to "module:Class" imported only in the worker that needs it
# (onnxruntime is the optional `serve` extra).
BACKENDS: dict[str, type | str] = {
    "skops": SkopsBackend,
    "onnx": "handoff_agent.serving.onnx_backend:OnnxBackend",
}
