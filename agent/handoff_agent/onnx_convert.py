"""Convert a version's model to ONNX, and keep it only where it predicts what the model does.

Converting loads the model, and loading runs its code, so the work happens in a sandboxed
worker (``python -I -m handoff_agent.onnx_convert``), which loads the bundle's skops model
through the trust list the agent passes, never one the bundle names. skl2onnx converts
scikit-learn; onnxmltools' converters for xgboost and lightgbm are registered with it, so a
pipeline holding them converts too. The worker then runs the model and the ONNX graph on the
pushed evaluation sample: the ONNX bytes reach the blob store only when predictions (and
probabilities) agree within the recorded tolerance. Anything else, including a model that
raises or hangs, is ``converted: false`` with a reason; the model is then served by skops.
skl2onnx, onnxmltools and onnxruntime are the optional ``serve`` extra, imported only in the
worker: without them conversion is refused with that reason, and no default path needs them.

Text pipelines are refused outright: onnxruntime tokenizes with its own regular-expression
engine, which can split text the evaluation sample does not contain differently from
scikit-learn, so parity on the sample would not carry over to production traffic.

The graph records how it is fed in its metadata (``handoff.*``), so the serving backend
(``serving/onnx_backend.py``) needs nothing but the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import sys
import tarfile
import time

from .parquet_bytes import read_frame

EXTRA = "onnx extra not installed (pip install 'jupyter-handoff[serve]')"
REQUIRED = ("onnx", "onnxruntime", "skl2onnx")
# A float32 graph differs from a float64 model by ~1e-7 relative; a converter bug shows as a
# whole tree or category, far above this. Recorded with every result.
DEFAULT_TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}  # what onnxmltools' tree converters emit
META = "handoff."


def extra_missing() -> str | None:
    """Why conversion cannot run here, or None. Looks the packages up without importing."""
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    return f"{EXTRA}: missing {', '.join(missing)}" if missing else None


def empty_result(tolerance: dict) -> dict:
    return {
        "converted": False,
        "reason": "",
        "tolerance": tolerance,
        "max_abs_diff": None,
        "label_agreement": None,
        "rows": 0,
        "onnx": None,
        "onnx_size": None,
        "seconds": None,
    }


# -- in the agent -----------------------------------------------------------------------------


async def convert(
    sandbox,
    blobs,
    digest: str,
    *,
    trusted: list[str],
    limits,
    timeout: float,
    tolerance: dict | None = None,
    sample_rows: int = 0,
) -> dict:
    """Convert bundle ``digest`` (a skops bundle in ``blobs``) in a sandboxed worker. Returns
    a JSON-able result; ``onnx`` is the digest of the stored ONNX bytes when ``converted``.
    ``tolerance``: ``{"atol", "rtol"}`` over ``DEFAULT_TOLERANCE``; ``trusted``: central's
    trust list (default plus added, never what the bundle asks for). ``sample_rows``: the
    result's ``sample`` also holds up to that many rows of the evaluation sample (columns,
    dtypes, data), read in the worker, for the load test; the worker then runs even without
    the onnx extra.
    Never raises for the model's sake: every failure is ``converted: false`` and a reason."""
    from .sandbox import SandboxRefused

    tol = {**DEFAULT_TOLERANCE, **(tolerance or {})}
    out = empty_result(tol)
    missing = extra_missing()
    if missing and not sample_rows:
        return {**out, "reason": missing}
    t0 = time.perf_counter()
    writer = await asyncio.to_thread(blobs.writer)
    try:
        bundle = await asyncio.to_thread(blobs.local_copy, digest)
        with bundle:
            run = await sandbox.run_once(
                "handoff_agent.onnx_convert",
                limits,
                {
                    "bundle": "",
                    "out": "",
                    "trusted_types": list(trusted),
                    "tolerance": tol,
                    "sample_rows": int(sample_rows),
                    "convert": missing or True,
                },
                {"bundle": bundle, "out": writer},
                timeout,
            )
        result = run.result
        if isinstance(run.error, SandboxRefused):
            why = str(run.error)
        elif isinstance(run.error, TimeoutError):
            why = f"the conversion did not finish within {timeout:g} s"
        elif run.error is not None:
            why = f"the conversion worker broke its protocol: {run.error}"
        elif not result:
            tail = " | ".join(run.stderr.strip().splitlines()[-3:])[-300:]
            why = f"the conversion worker exited with code {run.code} and no result ({tail})"
        elif not result.get("ok"):
            why = f"the conversion raised {result.get('error')}"
        else:
            why = ""
        if why:
            return {**out, "reason": why, "seconds": time.perf_counter() - t0}
        out.update({k: v for k, v in result.items() if k in out})
        if sample_rows:
            out["sample"] = result.get("sample")
        if out["converted"]:
            written = await asyncio.to_thread(writer.rehash)
            if written != result.get("sha256"):
                return {
                    **out,
                    "converted": False,
                    "reason": "the ONNX bytes written are not the ones the worker checked",
                }
            out["onnx"] = await asyncio.to_thread(writer.commit)
            out["onnx_size"] = writer.size
        out["seconds"] = time.perf_counter() - t0
        return out
    finally:
        writer.abort()


# -- in the worker ----------------------------------------------------------------------------


class Refused(Exception):
    """The model is not converted; the message says why, for the report."""


def _estimators(model):
    """The model and every estimator inside it (pipelines, column transformers, unions)."""
    stack, seen = [model], set()
    while stack:
        est = stack.pop()
        if id(est) in seen:
            continue
        seen.add(id(est))
        yield est
        # Fitted column transformers keep their fitted clones in transformers_.
        for attr in ("steps", "transformers", "transformers_", "transformer_list"):
            for part in getattr(est, attr, None) or ():
                if isinstance(part, tuple) and len(part) >= 2 and hasattr(part[1], "get_params"):
                    stack.append(part[1])


BOOSTERS = {
    # (library, class name): (skl2onnx alias, classifier?)
    ("xgboost", "XGBClassifier"): ("XGBoostXGBClassifier", True),
    ("xgboost", "XGBRegressor"): ("XGBoostXGBRegressor", False),
    ("lightgbm", "LGBMClassifier"): ("LightGbmLGBMClassifier", True),
    ("lightgbm", "LGBMRegressor"): ("LightGbmLGBMRegressor", False),
}


def _booster_key(est) -> tuple[str, str] | None:
    """``est``'s key in BOOSTERS (library, class name), or None for any other estimator."""
    key = (type(est).__module__.split(".")[0], type(est).__name__)
    return key if key in BOOSTERS else None


def _register_boosters(model) -> None:
    """Teach skl2onnx the xgboost and lightgbm estimators the model holds, with onnxmltools'
    converters. The classes come from the model itself, so neither library is imported here
    unless the model already did."""
    found = {}
    for est in _estimators(model):
        key = _booster_key(est)
        if key is not None:
            found[type(est)] = key
    if not found:
        return
    if importlib.util.find_spec("onnxmltools") is None:
        raise Refused(f"{EXTRA}: missing onnxmltools, needed for xgboost and lightgbm")
    from skl2onnx import update_registered_converter  # the `serve` extra, as in to_onnx
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    for cls, (library, _name) in found.items():
        alias, classifier = BOOSTERS[(library, _name)]
        # onnxmltools: the `serve` extra, checked by find_spec above (refused without it)
        if library == "xgboost":
            from onnxmltools.convert.xgboost.operator_converters.XGBoost import (
                convert_xgboost as converter,
            )
        else:
            from onnxmltools.convert.lightgbm.operator_converters.LightGbm import (
                convert_lightgbm as converter,
            )
        if classifier:
            update_registered_converter(
                cls,
                alias,
                calculate_linear_classifier_output_shapes,
                converter,
                options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
            )
        else:
            update_registered_converter(
                cls, alias, calculate_linear_regressor_output_shapes, converter
            )


@contextlib.contextmanager
def _index_named_boosters(model):
    """onnxmltools reads an xgboost booster's trees by feature index (``f0``, ``f1``…): a
    booster fitted on a named DataFrame names them instead. The graph is fed a matrix in
    the fitted column order, so the names are set aside for the conversion only."""
    held = []
    for est in _estimators(model):
        if _booster_key(est) is not None and hasattr(est, "get_booster"):
            booster = est.get_booster()
            if getattr(booster, "feature_names", None):
                held.append((booster, booster.feature_names))
                booster.feature_names = None
    try:
        yield
    finally:
        for booster, names in held:
            booster.feature_names = names


def _numeric(series) -> bool:
    return series.dtype.kind in "biuf"


def layout_for(model, X) -> dict:
    """How the graph is fed: ``tensor`` (one float matrix ``X``, columns in the model's order)
    where every column is numeric and nothing selects columns by name; else ``columns`` (one
    input per column: numbers as float, the rest as strings)."""
    columns = [str(c) for c in X.columns]
    by_name = any(hasattr(e, "transformers") for e in _estimators(model))
    if all(_numeric(X[c]) for c in X.columns) and not by_name:
        fitted = getattr(model, "feature_names_in_", None)
        if fitted is not None and sorted(map(str, fitted)) == sorted(columns):
            columns = [str(c) for c in fitted]
        return {"layout": "tensor", "columns": columns}
    kinds = {str(c): ("float" if _numeric(X[c]) else "string") for c in X.columns}
    return {"layout": "columns", "columns": columns, "kinds": kinds}


def feed(frame, meta: dict) -> dict:
    """The graph's inputs for a DataFrame's rows, as ``layout_for`` described them. Raises
    ValueError, naming the column, for input the graph cannot take."""
    import numpy as np

    columns = meta["columns"]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"missing columns: {', '.join(missing)}")
    if meta["layout"] == "tensor":
        try:
            return {(meta.get("inputs") or ["X"])[0]: frame[columns].to_numpy(dtype=np.float32)}
        except (TypeError, ValueError) as e:
            raise ValueError(f"every column must be numeric ({e})") from None
    out = {}
    # skl2onnx renames inputs that are not identifiers ("my col" becomes "my_col").
    for name, input_name in zip(columns, meta.get("inputs") or columns, strict=True):
        values = frame[name]
        if meta["kinds"][name] == "float":
            try:
                out[input_name] = values.to_numpy(dtype=np.float32).reshape(-1, 1)
            except (TypeError, ValueError):
                raise ValueError(f"column {name!r} must be numeric") from None
        else:
            if values.isna().any():
                raise ValueError(f"column {name!r} has missing values")
            out[input_name] = values.astype(str).to_numpy(dtype=object).reshape(-1, 1)
    return out


def _initial_types(meta: dict) -> list:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType  # `serve` extra

    if meta["layout"] == "tensor":
        return [("X", FloatTensorType([None, len(meta["columns"])]))]
    kinds = {"float": FloatTensorType, "string": StringTensorType}
    return [(c, kinds[meta["kinds"][c]]([None, 1])) for c in meta["columns"]]


GRAPH_NAME = "handoff"  # the same model converts to the same bytes, so to the same blob


def to_onnx(model, X, task: str | None) -> tuple[bytes, dict]:
    """The model as ONNX bytes with its feeding described in the metadata, or Refused."""
    import numpy as np
    import skl2onnx  # the `serve` extra: callers ask extra_missing() first

    _register_boosters(model)
    meta = layout_for(model, X)
    classifier = task == "classification"
    options = {id(model): {"zipmap": False}} if classifier else None
    try:
        with _index_named_boosters(model):
            onx = skl2onnx.convert_sklearn(
                model,
                initial_types=_initial_types(meta),
                options=options,
                target_opset=TARGET_OPSET,
                # skl2onnx names the graph with a random uuid: each validation of one model
                # stored another blob, and the one it replaced stayed behind as an orphan
                name=GRAPH_NAME,
            )
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise Refused(f"skl2onnx cannot convert {type(model).__name__}: {first}") from None
    outputs = [o.name for o in onx.graph.output]
    meta["inputs"] = [i.name for i in onx.graph.input]
    if len(meta["inputs"]) != (1 if meta["layout"] == "tensor" else len(meta["columns"])):
        raise Refused(f"the converted graph takes {len(meta['inputs'])} inputs, not one per column")
    meta["task"] = task
    meta["predictions"] = outputs[0]
    # A classifier without predict_proba (RidgeClassifier, LinearSVC) still gets a scores
    # output from skl2onnx; it is not served as probabilities.
    has_proba = classifier and hasattr(model, "predict_proba") and len(outputs) > 1
    meta["probabilities"] = outputs[1] if has_proba else None
    labels = getattr(model, "classes_", None) if classifier else None
    meta["classes"] = None if labels is None else np.asarray(labels).tolist()
    for key, value in meta.items():
        entry = onx.metadata_props.add()
        entry.key, entry.value = META + key, json.dumps(value)
    return onx.SerializeToString(), meta


def read_meta(session) -> dict:
    """What ``to_onnx`` recorded, from an onnxruntime session."""
    raw = session.get_modelmeta().custom_metadata_map
    return {k[len(META) :]: json.loads(v) for k, v in raw.items() if k.startswith(META)}


def run_onnx(data: bytes, frame) -> tuple[object, object]:
    """(predictions, probabilities or None) of the ONNX bytes on a DataFrame, in one thread."""
    import onnxruntime as ort  # the `serve` extra; without it validation serves skops

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    meta = read_meta(session)
    names = [meta["predictions"]] + ([meta["probabilities"]] if meta["probabilities"] else [])
    outs = session.run(names, feed(frame, meta))
    return outs[0].ravel(), (outs[1] if len(outs) > 1 else None)


def reference(model, X, kind: str, task: str | None) -> tuple[object, object]:
    """The model's own (predictions, probabilities or None) on ``X``, fed as it was fitted."""
    import numpy as np

    from .plugins import as_input

    x = as_input(X, kind)
    predictions = np.asarray(model.predict(x)).ravel()
    if len(predictions) != len(X):
        raise Refused(f"predict returned {len(predictions)} values for {len(X)} rows")
    proba = None
    if task == "classification" and callable(getattr(model, "predict_proba", None)):
        proba = np.asarray(model.predict_proba(x), dtype=np.float64)
    return predictions, proba


def parity(expected, expected_proba, data: bytes, X, task: str | None, tol: dict) -> dict:
    """Compare the model's outputs with its ONNX graph's on ``X``: the largest absolute
    difference of probabilities (classifiers) or predictions (regressors), and the share of
    equal labels. A label may differ only where the model's top two probabilities tie within
    ``atol``. Raises ``_Mismatch`` with the figures when they are outside the tolerance."""
    labels, proba = _run(data, X)
    out, agree = _agreement(expected, expected_proba, labels, proba, task, tol)
    out["rows"] = len(X)
    if not agree.all():
        raise _Mismatch(out)
    return out


def _run(data: bytes, X):
    try:
        return run_onnx(data, X)
    except ValueError as e:
        raise Refused(f"the converted graph cannot be fed the evaluation sample: {e}") from None
    except Exception as e:  # onnxruntime's own errors
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise Refused(f"onnxruntime cannot run the converted graph: {first}") from None


def _agreement(expected, expected_proba, labels, proba, task, tol: dict):
    """(figures, per-row agreement within the tolerance) of the model's and the graph's
    outputs."""
    import numpy as np

    atol, rtol = float(tol["atol"]), float(tol["rtol"])
    out = {"max_abs_diff": None, "label_agreement": None}
    if task == "classification":
        same = np.asarray(labels).astype(str) == expected.astype(str)
        out["label_agreement"] = float(same.mean())
        if expected_proba is None or proba is None:
            return out, same
        if proba.shape != expected_proba.shape:
            raise Refused(
                f"the ONNX graph gives probabilities of shape {proba.shape}, the model "
                f"{expected_proba.shape}"
            )
        diff = np.abs(proba.astype(np.float64) - expected_proba)
        out["max_abs_diff"] = float(diff.max())
        close = np.all(diff <= atol + rtol * np.abs(expected_proba), axis=1)
        tie = np.zeros(len(same), dtype=bool)
        if expected_proba.shape[1] > 1:
            top2 = np.sort(expected_proba, axis=1)[:, -2:]
            tie = top2[:, 1] - top2[:, 0] <= 2 * atol
        return out, close & (same | tie)
    expected = expected.astype(np.float64)
    diff = np.abs(np.asarray(labels, dtype=np.float64) - expected)
    out["max_abs_diff"] = float(diff.max())
    return out, diff <= atol + rtol * np.abs(expected)


NAN_PROBE_ROWS = 5  # evaluation rows per column blanked, to learn where the graph takes NaN


def nan_parity(model, X, kind: str, task: str | None, data: bytes, tol: dict) -> list[str]:
    """The float columns where the model takes a NaN and the graph answers as it does, on
    the first evaluation rows with that column blanked: the graph is served NaN there (an
    xgboost or lightgbm model's missing values), elsewhere the server refuses it. One call
    of each on every column's rows at once; column by column only when the model refuses
    some."""
    import numpy as np
    import pandas as pd

    columns = [c for c in X.columns if X[c].dtype.kind == "f"]
    head = X.iloc[:NAN_PROBE_ROWS]
    if not columns or not len(head):
        return []
    blocks = [head.assign(**{c: np.nan}) for c in columns]

    def agree(frames: list) -> list[bool]:
        probe = pd.concat(frames, ignore_index=True)
        expected, proba = reference(model, probe, kind, task)
        labels, got = _run(data, probe)
        _, rows = _agreement(expected, proba, labels, got, task, tol)
        return [bool(b.all()) for b in np.split(rows, len(frames))]

    try:
        verdicts = agree(blocks)
    except Exception:  # the model (or the graph) refuses NaN in some column: one at a time
        verdicts = []
        for block in blocks:
            try:
                verdicts += agree([block])
            except Exception:
                verdicts.append(False)
    return [str(c) for c, ok in zip(columns, verdicts, strict=True) if ok]


def with_meta(data: bytes, key: str, value) -> bytes:
    """The graph with one more ``handoff.*`` metadata entry."""
    import onnx  # with skl2onnx, the `serve` extra

    graph = onnx.load_from_string(data)
    entry = graph.metadata_props.add()
    entry.key, entry.value = META + key, json.dumps(value)
    return graph.SerializeToString()


class _Mismatch(Exception):
    def __init__(self, figures: dict):
        super().__init__("mismatch")
        self.figures = figures


def work(job: dict) -> dict:
    """The worker's job: load, predict, convert, compare. Writes the ONNX bytes to
    ``job["out"]`` only when they agree with the model."""
    tol = job.get("tolerance") or DEFAULT_TOLERANCE
    out = {"ok": True, **empty_result(tol)}
    if job.get("sample_rows"):
        out["sample"] = _sample(job["bundle"], int(job["sample_rows"]))
    if isinstance(job.get("convert"), str):  # the agent found the extra missing
        return {**out, "reason": job["convert"]}
    try:
        out.update(_convert(job, tol))
    except Refused as e:
        out["reason"] = str(e)
    except _Mismatch as e:
        out.update(e.figures)
        out["reason"] = (
            "the ONNX graph's predictions differ from the model's on the evaluation sample "
            f"(max abs diff {e.figures.get('max_abs_diff')}, label agreement "
            f"{e.figures.get('label_agreement')}; tolerance atol {tol['atol']:g}, "
            f"rtol {tol['rtol']:g})"
        )
    except ImportError as e:
        out["reason"] = f"{EXTRA}: {e}"
    return out


def _sample(path: str, rows: int) -> dict | None:
    """Up to ``rows`` rows of the bundle's evaluation sample as JSON (``columns``,
    ``dtypes``, ``data`` row by row, NaN as null), or None without one. Data only: the
    agent rebuilds the frame from JSON and never parses the bundle itself."""
    from .loadtest import plain_cell
    from .manifest import data_member

    try:
        with tarfile.open(path, mode="r:") as tar:
            X = read_frame(tar.extractfile(data_member("X")).read())
    except Exception:  # no sample is an answer; the conversion says what is wrong
        return None
    if X is None or len(X) == 0:
        return None
    X = X.iloc[:rows]
    return {
        "columns": [str(c) for c in X.columns],
        "dtypes": {str(c): str(X[c].dtype) for c in X.columns},
        "data": [[plain_cell(v) for v in rec] for rec in X.itertuples(index=False, name=None)],
    }


def _convert(job: dict, tol: dict) -> dict:
    from .checks.loads import detect_task
    from .manifest import model_member
    from .trust import UntrustedTypes, load_skops
    from .worker import _load_data

    with tarfile.open(job["bundle"], mode="r:") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        if manifest.get("serialization") != "skops":
            raise Refused(
                "only skops bundles are converted (this one is a pickle); central receives "
                "skops, converted by the local agent"
            )
        kind = (manifest.get("signature") or {}).get("input") or "table"
        if kind == "text":
            raise Refused(
                "text pipelines are served by skops: onnxruntime's tokenizer can split text "
                "differently from scikit-learn's on inputs the evaluation sample lacks"
            )
        try:
            model = load_skops(
                tar.extractfile(model_member("skops")).read(), job.get("trusted_types") or ()
            )
        except UntrustedTypes as e:
            raise Refused(f"not loaded: {e}") from None
        X = _load_data(tar).get("X")
    if X is None or len(X) == 0:
        raise Refused("no evaluation sample was pushed, so parity cannot be checked")
    task = manifest.get("task") or detect_task(model)
    if task not in ("classification", "regression"):
        raise Refused(f"{type(model).__name__} is neither a classifier nor a regressor")
    expected, expected_proba = reference(model, X, kind, task)  # the model's code runs here
    data, _meta = to_onnx(model, X, task)
    figures = parity(expected, expected_proba, data, X, task, tol)
    data = with_meta(data, "nan_columns", nan_parity(model, X, kind, task, data, tol))
    with open(job["out"], "wb") as f:
        f.write(data)
    return {
        **figures,
        "converted": True,
        "sha256": hashlib.sha256(data).hexdigest(),
        "onnx_size": len(data),
    }


def main() -> int:
    from .sandbox import serve_one_job

    return serve_one_job(work)


if __name__ == "__main__":
    sys.exit(main())
