"""Responses in each protocol's shape. Every response names the version that served it: in
the ``X-Handoff-Model-Version`` header, and in V2's ``model_version``."""

from __future__ import annotations

VERSION_HEADER = "X-Handoff-Model-Version"
SLOT_HEADER = "X-Handoff-Slot"
REQUEST_ID_HEADER = "X-Request-ID"
# Set by central's own load test (validation): the request is answered as any other, but kept
# out of the slot's statistics, the guardrails and the prediction log. Only an admin token
# (central's own is one) may send it: a consumer could otherwise hide its traffic.
LOAD_TEST_HEADER = "X-Handoff-Load-Test"

V2_OF_DTYPE = {"f": "FP64", "i": "INT64", "b": "BOOL", "s": "BYTES"}


def v2_datatype(values: list) -> str:
    first = next((v for v in values if v is not None), 0.0)
    if isinstance(first, bool):
        return "BOOL"
    if isinstance(first, int):
        return "INT64"
    if isinstance(first, float):
        return "FP64"
    return "BYTES"


def v2_outputs(outputs: dict[str, list], wanted: list[str] | None = None) -> list[dict]:
    out = []
    for name, values in outputs.items():
        if wanted and name not in wanted:
            continue
        if values and isinstance(values[0], list):  # [rows, classes]
            shape = [len(values), len(values[0])]
            flat = [x for row in values for x in row]
        else:
            shape, flat = [len(values)], values
        out.append({"name": name, "shape": shape, "datatype": v2_datatype(flat), "data": flat})
    return out


def v2_infer(model: str, number: int, request_id: str, outputs: dict, wanted=None) -> dict:
    return {
        "model_name": model,
        "model_version": str(number),
        "id": request_id,
        "outputs": v2_outputs(outputs, wanted),
    }


def v2_metadata(model: str, versions: list[int], signature: list[dict], info: dict) -> dict:
    """The model's inputs from its signature; its outputs and classes as its loaded workers
    report them (``info``: what they answered on a row of the evaluation sample)."""
    from .inputs import kind_of

    body = {
        "name": model,
        "versions": [str(v) for v in sorted(versions)],
        "platform": "handoff",
        "inputs": [
            {
                "name": c["name"],
                "datatype": V2_OF_DTYPE.get(kind_of(c.get("dtype", "")), "BYTES"),
                "shape": [-1],
            }
            for c in signature
        ],
        "outputs": info.get("outputs") or [{"name": "predict", "datatype": "BYTES", "shape": [-1]}],
    }
    if info.get("classes") is not None:  # predict_proba's columns, in this order
        body["parameters"] = {"classes": info["classes"]}
    return body


def invocations(outputs: dict) -> dict:
    """MLflow's answer: ``{"predictions": [...]}`` (with probabilities beside, when any)."""
    body = {"predictions": outputs.get("predict", [])}
    if "predict_proba" in outputs:
        body["probabilities"] = outputs["predict_proba"]
    return body
