"""``jupyter handoff monitor import``: a prediction log from another system becomes this
model's log (segments in the BlobStore, listed like the model server's), its labels become
feedback with their own arrival times, so a model served elsewhere is monitored too.

The file is Parquet with one row per prediction:
- ``time``: when it was served (timestamp, or epoch seconds);
- ``request_id``: optional (needed to send labels later); generated when absent;
- ``prediction``; optional ``score`` (P(positive) of a binary classifier);
- optional ``label`` and ``label_time`` (when the label arrived; default, and where it is
  missing: at ``time``);
- optional ``latency_ms``, ``status`` and ``version``;
- every other column is an input feature.

Each row becomes one record of the log, in the server's columnar layout (``in:``/``out:``
list columns of one value each, built by Arrow from the file's columns); a file whose column
Arrow cannot type as one scalar type (numbers and text mixed, timestamps, categories) gets
its inputs as JSON objects of scalars instead. The monitor reads both.

With ``reference=True`` the file is the model's monitoring reference instead (validation data
with predictions, scores and labels), against which windows are compared.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid

import numpy as np
import pandas as pd

from ..errors import BadRequest
from ..parquet_bytes import read_frame
from ..serving.predlog import IN, OUT, SCHEMA
from .frames import RESERVED
from .windows import in_range, iso, span_text

SEGMENT_ROWS = 20_000  # a run reads only the segments that overlap its windows


def _epoch(values: pd.Series) -> np.ndarray:
    """Epoch seconds from timestamps (naive ones are UTC) or numbers."""
    if pd.api.types.is_datetime64_any_dtype(values):
        if values.dt.tz is None:
            values = values.dt.tz_localize("UTC")
        return ((values - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy()
    return pd.to_numeric(values).to_numpy(dtype=float)


def _times(values: pd.Series, column: str, what: str) -> np.ndarray:
    """Epoch seconds of ``column``, each a time monitoring can place in a window."""
    try:
        out = _epoch(values)
    except (ValueError, TypeError):
        out = None
    if out is not None:  # NaN compares False: it is out of range too
        wrong = np.flatnonzero(~in_range(out, time.time()))
        if not len(wrong):
            return out
    where = "" if out is None else f" (row {wrong[0]}: {values.iloc[wrong[0]]})"
    raise BadRequest(
        f"The column {column} holds a value that is not a time {span_text()}{where}.",
        f"Give timestamps, or epoch seconds, of when {what}.",
    )


def read(data: bytes) -> pd.DataFrame:
    try:
        return read_frame(data)
    except Exception as e:
        raise BadRequest(
            f"The file is not a readable Parquet file ({type(e).__name__}: {e}).",
            "Write it with DataFrame.to_parquet: columns time, prediction, the inputs, "
            "and optionally request_id, score, label, label_time.",
        ) from None


def _probabilities(frame: pd.DataFrame) -> None:
    """A ``score`` column holds P(positive): numbers between 0 and 1 (or nulls). A decision
    function's values or logits would bin outside the calibration bins and skew CBPE."""
    if "score" not in frame:
        return
    s = pd.to_numeric(frame["score"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    wrong = np.flatnonzero((frame["score"].notna().to_numpy() & np.isnan(s)) | (s < 0) | (s > 1))
    if len(wrong):
        i = int(wrong[0])
        value = frame["score"].iloc[i]
        value = value.item() if isinstance(value, np.generic) else value
        raise BadRequest(
            f"The column score holds {value!r} (row {i}), not a probability between 0 and 1.",
            "score is P(positive) of a binary classifier, e.g. predict_proba(X)[:, 1]; leave "
            "the column out if the model gives none.",
        )


# The optional columns the log's fixed schema types as numbers: what each holds, from, to
# (nulls stay: the server writes them too, for a request it did not finish).
_NUMBERS = {
    "version": ("a whole number", 0, 2**53),
    "status": ("an HTTP status", 100, 599),
    "latency_ms": ("milliseconds", 0, None),
}


def _numbers(frame: pd.DataFrame) -> None:
    """version, status and latency_ms as the log's schema holds them: text there ("weird"
    as a status) failed the import with Arrow's traceback."""
    for column, (what, low, high) in _NUMBERS.items():
        if column not in frame:
            continue
        values = frame[column]
        try:
            s = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError):  # cells that are lists
            s = np.full(len(values), np.nan)
        ok = np.isfinite(s) & (s >= low) & (s <= (np.inf if high is None else high))
        if high is not None:  # whole numbers
            ok &= s == np.round(s)
        wrong = np.flatnonzero(~ok & values.notna().to_numpy())
        if len(wrong):
            i = int(wrong[0])
            upto = f" to {high}" if high is not None and high < 1000 else ""
            raise BadRequest(
                f"The column {column} holds {_plain(values.iloc[i])!r} (row {i}), not {what} "
                f"from {low:g}{upto}.",
                f"Give {column} as numbers, or leave the column out.",
            )


def _request_ids(frame: pd.DataFrame) -> None:
    """One prediction each: labels, imported or sent later, are joined to predictions by
    request id, so a repeated one scored each label against another row's prediction."""
    if "request_id" not in frame:
        return
    ids = frame["request_id"].astype(str)
    repeated = np.flatnonzero(ids.duplicated(keep=False).to_numpy())
    if len(repeated):
        first = int(repeated[0])
        again = int(np.flatnonzero((ids == ids.iloc[first]).to_numpy())[1])
        raise BadRequest(
            f"The column request_id holds {ids.iloc[first]!r} more than once (rows {first} "
            f"and {again}).",
            "Give each prediction its own request_id (labels are joined to predictions by "
            "it), or leave the column out and the import names them.",
        )


def _label(value):
    """A label as the feedback route takes it: Python scalars, a list for a request of rows."""
    if isinstance(value, np.ndarray):
        return [_label(v) for v in value.tolist()]
    return value.item() if isinstance(value, np.generic) else value


def _labels(lab: pd.DataFrame, ids_given: bool) -> list[tuple[str, object]]:
    """The labelled rows' (request id, label), under the feedback route's rule
    (serving.labels): "yes" for a 0/1 model scored every prediction wrong. ``ids_given``:
    the file has request ids; else a refusal names the row (the ids were made here)."""
    from ..serving.labels import problem

    pairs = [(str(r), _label(v)) for r, v in zip(lab["request_id"], lab["label"], strict=True)]
    predicted = {r: _label(p) for (r, _), p in zip(pairs, lab["prediction"], strict=True)}
    if why := problem(pairs, lambda r: [predicted[r]]):
        rid = next(r for r, _ in pairs if f"request {r!r}" in why)
        row = lab.index[[r for r, _ in pairs].index(rid)]
        where = f"request_id {rid!r}" if ids_given else f"row {row}"
        raise BadRequest(
            why.replace(f"request {rid!r}", where, 1),
            "Give labels as the model predicts them (e.g. 0/1, not 'no'/'yes').",
        )
    return pairs


def import_reference(registry, blobs, model: str, frame: pd.DataFrame, by: str) -> dict:
    if "prediction" not in frame:
        raise BadRequest(
            "A reference needs a prediction column (and the inputs; score and label optional).",
            "Add the model's predictions on its validation data as a column named prediction.",
        )
    if frame.empty:  # it would replace the reference, and every window's drift go silent
        raise BadRequest(
            "The reference has no rows.",
            "Import the model's validation data with its predictions (a few hundred rows).",
        )
    _probabilities(frame)
    data = io.BytesIO()
    frame.to_parquet(data, index=False)
    digest = blobs.put_bytes(data.getvalue())
    registry.reference_set(model, digest, len(frame), by)
    return {"model": model, "reference": digest, "rows": len(frame)}


def _one_each(values, missing=None):
    """Arrow values as lists of one value each (one row per imported request); a row where
    ``missing`` (a numpy bool array) is a null list of length 0, as older pyarrow's Parquet
    writer requires."""
    import pyarrow as pa

    if missing is None or not missing.any():
        offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, values)
    kept = values.filter(pa.array(~missing))
    offsets = pa.array(np.concatenate(([0], np.cumsum(~missing))).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, kept, mask=pa.array(missing))


def _scalars(values: pd.Series):
    """The column as one Arrow array of numbers, booleans or text; None when it is not."""
    import pyarrow as pa

    try:
        arr = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return None
    if isinstance(arr, pa.ChunkedArray):  # pandas' Arrow-backed text
        arr = arr.combine_chunks()
    t = arr.type
    plain = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
    return arr if plain or pa.types.is_string(t) or pa.types.is_large_string(t) else None


def _columnar(part: pd.DataFrame, features: list[str]) -> dict | None:
    """The ``in:``/``out:`` columns of the part, or None when a column does not fit."""
    import pyarrow as pa

    columns = {}
    for c in features:
        arr = _scalars(part[c])
        if arr is None:
            return None
        columns[IN + str(c)] = _one_each(arr)
    pred = _scalars(part["prediction"])
    if pred is None:
        return None
    columns[OUT + "predict"] = _one_each(pred)
    if "score" in part:
        s = part["score"].to_numpy(dtype=float)
        flat = pa.array(np.column_stack([1 - s, s]).ravel())
        two = pa.array(np.arange(0, 2 * len(s) + 1, 2, dtype=np.int32))
        pairs = pa.ListArray.from_arrays(two, flat)  # [1 - score, score] per row
        columns[OUT + "predict_proba"] = _one_each(pairs, missing=~np.isfinite(s))
    return columns


def _json_texts(part: pd.DataFrame, features: list[str]) -> tuple[list, list]:
    """Inputs and outputs as JSON text, one object per row, written by pandas' C writer:
    {"x1": 0.5, "cat": "a"} (the layout of a file Arrow cannot type)."""
    inputs = part[features].to_json(orient="records", lines=True).splitlines()
    preds = [
        json.dumps(p, default=_plain)
        for p in part["prediction"].astype(object).where(part["prediction"].notna(), None)
    ]
    outputs = pd.Series(['{"predict":[' + p + "]" for p in preds])
    if "score" in part:
        s = part["score"].to_numpy(dtype=float)
        proba = (
            ',"predict_proba":[['
            + pd.Series(1 - s).astype(str)
            + ","
            + pd.Series(s).astype(str)
            + "]]"
        )
        outputs = outputs + proba.where(np.isfinite(s), "")
    outputs = (outputs + "}").tolist()
    return inputs, outputs


def _records_parquet(
    part: pd.DataFrame, features: list[str], model: str, columnar: bool = True
) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    layout = _columnar(part, features) if columnar else None
    no_text = ([None] * len(part),) * 2  # the columnar layout has no JSON text
    inputs, outputs = _json_texts(part, features) if layout is None else no_text
    n = len(part)
    columns = {
        "request_id": part["request_id"].astype(str).tolist(),
        "model": [model] * n,
        "version": part["version"].tolist() if "version" in part else [0] * n,
        "slot": ["imported"] * n,
        "time": part["_t"].tolist(),
        "latency_ms": part["latency_ms"].tolist() if "latency_ms" in part else [None] * n,
        "status": part["status"].tolist() if "status" in part else [200] * n,
        "inputs": inputs,
        "outputs": outputs,
        "error": [None] * n,
    }
    table = pa.table(
        {name: pa.array(columns[name], type=getattr(pa, kind)()) for name, kind in SCHEMA}
        | (layout or {})
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _plain(v):
    return v.item() if isinstance(v, np.generic) else str(v)


def import_log(registry, blobs, model: str, frame: pd.DataFrame, by: str) -> dict:
    """Append the file's rows to the model's prediction log and its labels to the feedback."""
    missing = [c for c in ("time", "prediction") if c not in frame]
    if missing:
        raise BadRequest(
            f"The prediction log lacks the column(s) {', '.join(missing)}.",
            "It needs time (when each prediction was served) and prediction; the other "
            "columns are the inputs, plus optional request_id, score, label, label_time.",
        )
    features = [c for c in frame.columns if c not in RESERVED]
    if not features:  # every record is a request's inputs: the monitor reads rows from them
        raise BadRequest(
            f"The prediction log has no input columns, only {', '.join(map(str, frame.columns))}.",
            "Add the model's inputs, one column per feature as it was served: drift and "
            "each request's rows are read from them.",
        )
    if not len(frame):
        raise BadRequest("The prediction log holds no rows.", "Nothing was imported.")
    _probabilities(frame)
    _numbers(frame)
    _request_ids(frame)
    frame = frame.copy()
    frame["_t"] = _times(frame["time"], "time", "each prediction was served")
    if "label" in frame and "label_time" in frame:  # checked before a segment is written
        # a labelled row without label_time (NaT, null) got its label at ``time``, as a
        # file without the column does
        given = frame["label"].notna() & frame["label_time"].notna()
        frame["_arrived"] = frame["_t"]
        if given.any():
            frame.loc[given, "_arrived"] = _times(
                frame.loc[given, "label_time"], "label_time", "each label arrived"
            )
    ids_given = "request_id" in frame
    if not ids_given:  # named by the file's content: a rerun names them alike
        try:
            content = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
            tag = hashlib.sha256(content).hexdigest()[:12]
        except TypeError:  # cells pandas cannot hash (lists): a rerun is not recognised
            tag = uuid.uuid4().hex[:12]
        frame["request_id"] = [f"import-{tag}-{i}" for i in range(len(frame))]
    frame = frame.sort_values("_t", kind="stable")
    triples = []  # refused before a segment is written
    if "label" in frame:
        lab = frame[frame["label"].notna()]
        arrived = (lab["_arrived"] if "_arrived" in lab else lab["_t"]).to_numpy()
        pairs = _labels(lab, ids_given)
        triples = [(r, v, iso(a)) for (r, v), a in zip(pairs, arrived, strict=True)]
    # Every segment's blob first; then the segments, the labels and the audit row in one
    # transaction: an import killed or failed midway adds nothing (orphan blobs at most,
    # which fsck notes), so running it again counts each prediction once.
    segments = []
    for i in range(0, len(frame), SEGMENT_ROWS):
        part = frame.iloc[i : i + SEGMENT_ROWS]
        data = _records_parquet(part, features, model)
        digest = blobs.put_bytes(data)
        segments.append(
            (digest, len(part), len(data), float(part["_t"].min()), float(part["_t"].max()))
        )
    with registry.transaction():
        # A segment already in the log (the same file imported again, its run done but not
        # seen to finish) holds the same records: added once.
        logged = {s["digest"] for s in registry.segments_of(model)}
        fresh = [s for s in segments if s[0] not in logged]
        for segment in fresh:
            registry.segment_add(model, *segment)
        already = sum(s[1] for s in segments) - sum(s[1] for s in fresh)
        labels = registry.feedback_import(model, triples, by) if triples else 0
        registry.audit_append(
            by,
            "monitor.import",
            model,
            {"rows": len(frame), "labels": labels, "already_logged": already},
        )
    days = np.unique(np.floor(frame["_t"].to_numpy() / 86400.0))
    return {
        "model": model,
        "rows": len(frame),
        "already_logged": already,
        "labels": labels,
        "features": features,
        "first": iso(float(frame["_t"].min())),  # when the first and last were served
        "last": iso(float(frame["_t"].max())),
        "days": len(days),  # the UTC days the predictions were served on
    }
