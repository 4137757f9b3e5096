"""Helpers for the ONNX tests: bundles as the notebook writes them, and the conversion
worker's job run in the test process."""

from __future__ import annotations

import json

from handoff_agent import onnx_convert, trust


def bundle_of(model, X, y=None, fmt: str = "skops") -> bytes:
    """A bundle as ``%mlops push`` writes it (the notebook side's own functions)."""
    from handoff_agent import manifest as shape
    from jupyter_handoff import bundle_writer as bw
    from jupyter_handoff.api import _task
    from jupyter_handoff.data import prepare

    members, fps, signature = prepare(X, y, None, None, 500, 500, bw.feature_names(model))
    member, data = bw.serialize_model(model, fmt)
    members[member] = data
    manifest = shape.build(
        name="m",
        serialization=fmt,
        flavor=type(model).__module__.split(".")[0],
        task=_task(model),
        signature=signature,
        data=fps,
    )
    return b"".join(bytes(p) for p in bw.assemble(members, manifest).parts)


def run_job(tmp_path, model, X, y=None, added=(), **kw) -> tuple[dict, bytes]:
    """The worker's job in this process: (result, the ONNX bytes it wrote)."""
    src, out = tmp_path / "bundle.tar", tmp_path / "model.onnx"
    src.write_bytes(bundle_of(model, X, y, **kw))
    out.write_bytes(b"")
    job = {"bundle": str(src), "out": str(out), "trusted_types": trust.effective(added)}
    result = onnx_convert.work(job)
    json.dumps(result)  # JSON-able, as the protocol needs
    return result, out.read_bytes()
