"""The serving worker: one sandboxed process holding one version's model, answering predict
requests over a socket for as long as it lives.

Started by ``Sandbox.spawn`` as ``python -I -m handoff_agent.serving.worker``. Its job (on
stdin, with open files) names the backend, the bundle (a verified temporary copy from the
blob store, passed as a descriptor: never a store path), central's trust list, and
``channel``: a socket. On the channel it first says ``{"ready": …}`` (or why it could not
load), then reads one JSON request per line and writes one JSON answer per line, in order.
A failing predict is an answer (``ok: false``), never an exit.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import time


def _warm_imports() -> None:
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import sklearn.base  # noqa: F401


def _backend_class(name: str, entry: str | None):
    from .backend import BACKENDS

    found = entry if entry else BACKENDS.get(name)
    if found is None:
        raise ValueError(f"unknown serving backend {name!r}; known: {sorted(BACKENDS)}")
    if isinstance(found, str):  # "module:Class", imported only in the worker that needs it
        module, _, attr = found.partition(":")
        found = getattr(importlib.import_module(module), attr)
    return found


def float_block(request: dict):
    """The request as one rows x columns float64 array, in the signature's order, when every
    column is float64 (a numeric signature); else None. One array instead of a column-by-column
    frame and cast, which cost more than a single-row predict."""
    columns, data = request["columns"], request["data"]
    dtypes = request.get("dtypes") or {}
    if not columns or not all(dtypes.get(c) == "float64" for c in columns):
        return None
    import numpy as np

    try:  # the server checked these are numbers (or null where NaN is taken)
        block = np.array([data[c] for c in columns], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None  # the frame path says what is wrong
    return block.T if block.ndim == 2 else None


_INDEXES: dict[tuple, object] = {}


def _index(columns: list[str]):
    """The columns' pandas Index, made once per signature (making it costs more than the
    frame over a block)."""
    import pandas as pd

    key = tuple(columns)
    found = _INDEXES.get(key)
    if found is None:
        if len(_INDEXES) > 64:  # one version per worker: a few signatures at most
            _INDEXES.clear()
        found = _INDEXES[key] = pd.Index(columns)
    return found


def frame_of(request: dict, block=None):
    """The request's columns as a DataFrame in the signature's order and dtypes (from
    ``float_block`` where it applies: one block, no copy)."""
    import pandas as pd

    columns, data = request["columns"], request["data"]
    block = float_block(request) if block is None else block
    if block is not None:
        return pd.DataFrame(block, columns=_index(columns), copy=False)
    dtypes = request.get("dtypes") or {}
    frame = pd.DataFrame({c: data[c] for c in columns}, columns=columns)
    have = frame.dtypes
    for col in columns:
        want = dtypes.get(col)
        if want and str(have[col]) != want:
            frame[col] = frame[col].astype(want)
    return frame


def answer(backend, request: dict) -> dict:
    t0 = time.perf_counter()
    try:
        block = float_block(request)
        outputs = None
        if block is not None and hasattr(backend, "predict_block"):  # no frame needed
            outputs = backend.predict_block(block, request["columns"])
        if outputs is None:
            outputs = backend.predict(frame_of(request, block))
    except Exception as e:  # the model refused this input: say so, keep serving
        first = (str(e).strip().splitlines() or [""])[0][:300]
        return {"id": request.get("id"), "ok": False, "error": f"{type(e).__name__}: {first}"}
    ms = (time.perf_counter() - t0) * 1000
    return {"id": request.get("id"), "ok": True, "outputs": outputs, "ms": ms}


def described(backend) -> dict:
    """What a request gets from this version, for the V2 metadata: each output's name,
    datatype and shape, read off one row of the evaluation sample (none without a sample),
    and a classifier's classes in ``predict_proba``'s column order."""
    from .protocols import v2_outputs

    out = {"classes": getattr(backend, "class_labels", lambda: None)()}
    sample = getattr(backend, "sample", None)
    if sample is not None and len(sample):
        whole = sample.dropna().head(1)
        try:
            got = backend.predict(whole if len(whole) else sample.head(1))
        except Exception:  # the sample's row refused: the metadata says less, serving goes on
            return out
        out["outputs"] = [
            {"name": o["name"], "datatype": o["datatype"], "shape": [-1, *o["shape"][1:]]}
            for o in v2_outputs(got)
        ]
    return out


def main() -> int:
    with contextlib.suppress(ImportError):
        _warm_imports()
    from ..sandbox import confine, receive_job
    from ..worker import claim_stdout

    job = receive_job()
    claim_stdout()  # whatever the model prints goes to stderr
    fd = int(job["channel"].rsplit("/", 1)[-1])
    channel = socket.socket(fileno=fd)
    reader, writer = channel.makefile("rb"), channel.makefile("wb")

    def send(message: dict) -> None:
        writer.write(json.dumps(message, default=str).encode() + b"\n")
        writer.flush()

    confine(job.get("limits"))  # after our imports, before any model code
    try:
        backend = _backend_class(job.get("backend", "skops"), job.get("backend_entry")).load(job)
        nan_ok = getattr(backend, "nan_columns", lambda: None)()
        about = described(backend)
    except BaseException as e:
        send({"ready": False, "error": f"{type(e).__name__}: {e}"[:1000]})
        return 1
    ready = {"ready": True, "backend": backend.name, "nan_ok": nan_ok, "pid": os.getpid()}
    send({**ready, **about})
    for line in reader:
        try:
            request = json.loads(line)
        except ValueError:
            send({"id": None, "ok": False, "error": "not a JSON request"})
            continue
        send(answer(backend, request))
    return 0


if __name__ == "__main__":
    from ..worker import exit_now

    exit_now(main())
