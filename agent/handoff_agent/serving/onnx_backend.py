"""The ONNX serving backend: a version's model converted to ONNX (``onnx_convert``) and served
by onnxruntime, for the versions whose conversion matched the model on the evaluation sample.

It reads only the ONNX bytes (and the bundle's manifest and sample): the graph's metadata says
how it is fed, so nothing of the model's own code runs. It answers like the skops backend:
``predict`` (one value per row) and ``predict_proba`` (one list per row) where the model has
probabilities. Without onnxruntime (the ``serve`` extra) or without a converted graph, ``load``
falls back to the skops backend, and ``choose`` names ``skops``.

The server passes the graph as the job's ``onnx`` file (a verified local copy of the blob,
as it passes ``bundle``). One thread per session: a worker serves one request at a time, and
single-row latency is what matters.
"""

from __future__ import annotations

import importlib.util
import json
import tarfile

from ..manifest import MANIFEST, data_member, model_member
from ..parquet_bytes import read_frame

SKOPS = model_member("skops")
X_MEMBER = data_member("X")


def available() -> bool:
    """Whether onnxruntime can be imported here (looked up, not imported)."""
    return importlib.util.find_spec("onnxruntime") is not None


def choose(conversion: dict | None) -> str:
    """The backend to serve a version with, from its ``onnx_convert`` result."""
    if conversion and conversion.get("converted") and conversion.get("onnx") and available():
        return "onnx"
    return "skops"


def _column(values) -> list:
    import numpy as np

    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        return [None if v != v else float(v) for v in arr.ravel().tolist()]  # NaN → null
    return arr.ravel().tolist()


class OnnxBackend:
    """onnxruntime over the converted graph. ``OnnxBackend(data)`` from the bytes; ``load(job)``
    in a serving worker."""

    name = "onnx"

    def __init__(self, data: bytes, manifest: dict | None = None, sample=None, threads: int = 1):
        import onnxruntime as ort  # the `serve` extra: chosen only when available()

        from ..onnx_convert import read_meta

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            data, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.meta = read_meta(self.session)
        if not self.meta.get("layout"):
            raise ValueError("this ONNX graph was not made by handoff_agent.onnx_convert")
        self.outputs = [self.meta["predictions"]]
        if self.meta.get("probabilities"):
            self.outputs.append(self.meta["probabilities"])
        self.manifest = manifest or {}
        self.sample = sample

    @classmethod
    def load(cls, job: dict):
        """From a serving worker's job: ``onnx`` (the graph's file), ``bundle`` (for the
        manifest and the sample). Falls back to the skops backend when onnxruntime is not
        installed or the job carries no graph."""
        if not available() or not job.get("onnx"):
            from .backend import SkopsBackend  # the server's default backend

            return SkopsBackend.load(job)
        manifest, sample = {}, None
        if job.get("bundle"):
            manifest, sample = _manifest_and_sample(job["bundle"])
        with open(job["onnx"], "rb") as f:
            data = f.read()
        try:
            return cls(data, manifest, sample, job.get("threads", 1))
        except Exception:  # a graph this onnxruntime cannot open: the model still serves
            from .backend import SkopsBackend

            return SkopsBackend.load(job)

    @property
    def columns(self) -> list[str]:
        return list(self.meta["columns"])

    def class_labels(self) -> list | None:
        """The classes the conversion recorded (a graph converted before it recorded them:
        None)."""
        return self.meta.get("classes")

    def predict(self, frame) -> dict[str, list]:
        """Named outputs for a DataFrame holding the signature's columns. Raises ValueError,
        naming the column, for input the graph cannot take."""
        from ..onnx_convert import feed

        return self._run(feed(frame, self.meta))

    def predict_block(self, block, columns: list[str]) -> dict[str, list] | None:
        """Named outputs for a float64 rows x ``columns`` array, fed as ``feed`` feeds a frame
        of it (float32, by the graph's layout) without building the frame; None when the
        graph wants a column that is missing or not a float (the frame path says why)."""
        import numpy as np

        where = {c: i for i, c in enumerate(columns)}
        want = self.meta["columns"]
        kinds = self.meta.get("kinds") or {}
        if any(c not in where for c in want):
            return None
        idx = [where[c] for c in want]
        if self.meta["layout"] == "tensor":
            name = (self.meta.get("inputs") or ["X"])[0]
            return self._run({name: block[:, idx].astype(np.float32)})
        if any(kinds.get(c) != "float" for c in want):
            return None
        by_column = block.T[idx].astype(np.float32)  # one contiguous row per column
        names = self.meta.get("inputs") or want
        return self._run({n: by_column[j].reshape(-1, 1) for j, n in enumerate(names)})

    def _run(self, inputs: dict) -> dict[str, list]:
        outs = self.session.run(self.outputs, inputs)
        result = {"predict": _column(outs[0])}
        if len(outs) > 1:
            result["predict_proba"] = outs[1].astype(float).tolist()
        return result

    def nan_columns(self) -> list[str] | None:
        """The numeric columns where the graph takes NaN as the model does: those the
        conversion found so with each column blanked (``onnx_convert.nan_parity``), and
        those where the evaluation sample itself holds NaN (parity was checked there). None
        without a sample (the server then decides)."""
        if self.sample is None or not len(self.sample):
            return None
        kinds = self.meta.get("kinds") or {}
        probed = set(self.meta.get("nan_columns") or ())
        return [
            str(c)
            for c in self.sample.columns
            if str(c) in self.meta["columns"]
            and kinds.get(str(c), "float") == "float"
            and (str(c) in probed or bool(self.sample[c].isna().any()))
        ]


def _manifest_and_sample(path: str):
    manifest, sample = {}, None
    with tarfile.open(path, mode="r:") as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        if X_MEMBER in tar.getnames():
            sample = read_frame(tar.extractfile(X_MEMBER).read())
    return manifest, sample
