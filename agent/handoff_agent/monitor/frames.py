"""The prediction log (one record per request) and the feedback, as flat frames with one row
per prediction: the feature columns, ``prediction``, ``score`` (P(positive) of a binary
classifier), ``label`` and the request's time.

A record's inputs and outputs are either columnar (``in:``/``out:`` list columns, what the
server writes now: flattened by Arrow, no Python per value) or JSON text (older segments, a
backfill, records that fit no column). The JSON of a window is parsed by Arrow's C++ reader in
one call per column; a window holding both reads as one frame, in the log's order.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from ..serving.predlog import IN, OUT

RESERVED = {
    "time",
    "request_id",
    "prediction",
    "score",
    "label",
    "label_time",
    "latency_ms",
    "status",
    "version",
    "slot",
    "error",
}


def _ndjson(texts: pd.Series):
    """The column's JSON texts as one newline-delimited buffer, joined by Arrow (a window's
    million strings never become Python objects)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(texts, type=pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    nl, empty = pa.scalar("\n", pa.large_string()), pa.scalar("", pa.large_string())
    joined = pc.binary_join_element_wise(arr, nl, empty)
    _, offsets, data = joined.buffers()
    at = np.frombuffer(offsets, dtype=np.int64)[joined.offset : joined.offset + len(joined) + 1]
    return data[int(at[0]) : int(at[-1])]


def _lines(series: pd.Series, unwrap: bool = False, inputs: bool = False) -> pd.DataFrame:
    """A column of JSON objects as a frame, parsed by Arrow's C++ JSON reader in one call
    (pandas' reader when Arrow cannot type a column, e.g. numbers and text mixed)."""
    texts = series.fillna("{}").astype(str)
    if texts.empty:
        return pd.DataFrame(index=range(0))
    import pyarrow as pa
    from pyarrow import json as pa_json

    data = _ndjson(texts)
    try:
        # blocks of 4 MB: parsed on every core, and few enough to type the columns alike
        options = pa_json.ReadOptions(block_size=4 << 20)
        table = pa_json.read_json(pa.BufferReader(data), read_options=options)
        columns = {}
        for name in table.column_names:
            col = table[name]
            # one row per request: unwrap in C++ (an input's missing key: null; an output's
            # stays wrapped, ``_per_row`` reads it)
            if unwrap and pa.types.is_list(col.type) and (inputs or col.null_count == 0):
                one = pa.compute.equal(pa.compute.list_value_length(col), 1)
                if pa.compute.all(one).as_py():
                    col = pa.compute.list_element(col, 0)
            columns[name] = col.to_pandas()
        return pd.DataFrame(columns)
    except (ValueError, TypeError):  # ArrowInvalid, ArrowTypeError
        return pd.read_json(io.BytesIO(data.to_pybytes()), lines=True, dtype=False)


def _seq(v) -> bool:
    return isinstance(v, list | np.ndarray)


def _unwrap(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Columns of per-request lists (the server logs ``{"col": [values]}`` for requests of
    several rows) as one row per value, and the number of rows of each request; scalar
    columns (one row per request, already unwrapped) as they are."""
    n = len(frame)
    if not n or not len(frame.columns):
        return frame, np.ones(n, dtype=int)
    first = frame[frame.columns[0]]
    if first.dtype != object or not first.map(_seq).any():  # typed by Arrow: scalars
        return frame.reset_index(drop=True), np.ones(n, dtype=int)
    lengths = first.map(lambda v: len(v) if _seq(v) else 1).to_numpy().astype(int)
    if (lengths == 1).all():
        return frame.apply(lambda c: c.map(lambda v: v[0] if _seq(v) and len(v) else v)), lengths
    try:
        return frame.explode(list(frame.columns)).reset_index(drop=True), lengths
    except ValueError:  # ragged lists (records the log kept as text): padded with nulls
        size = frame.apply(lambda c: c.map(lambda v: len(v) if _seq(v) else 1))
        lengths = size.max(axis=1).to_numpy().astype(int)
        padded = {
            c: [
                list(v) + [None] * (k - len(v)) if _seq(v) else [v] * k
                for v, k in zip(frame[c], lengths, strict=True)
            ]
            for c in frame.columns
        }
        return pd.DataFrame(padded).explode(list(frame.columns)).reset_index(drop=True), lengths


def rows(log: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(requests, rows) of a slice of the log. ``requests`` keeps one row per request (time,
    status, latency, version); ``rows`` one row per prediction."""
    keep = ["request_id", "time", "status", "latency_ms", "version", "error"]
    requests = log[[c for c in keep if c in log]].reset_index(drop=True)
    ok = log[log["status"].fillna(200) < 400].reset_index(drop=True)
    if ok.empty:
        return requests, pd.DataFrame({"request_id": [], "time": [], "prediction": []})
    lists = [c for c in ok.columns if c.startswith(IN)]
    columnar = np.zeros(len(ok), dtype=bool)
    for c in lists:
        columnar |= ok[c].notna().to_numpy(dtype=bool)
    if not columnar.any():
        return requests, _json_rows(ok)[0]
    if columnar.all():
        return requests, _columnar_rows(ok)[0]
    # old and new segments in one window: each part read its way, then the log's order again
    parts = []
    for mask, read in sorted(
        ((~columnar, _json_rows), (columnar, _columnar_rows)), key=lambda m: np.argmax(m[0])
    ):  # the columns in the order the log first has them
        part, lengths = read(ok[mask].reset_index(drop=True))
        parts.append(part.assign(_at=np.repeat(np.flatnonzero(mask), lengths)))
    frame = pd.concat(parts, ignore_index=True).sort_values("_at", kind="stable")
    return requests, frame.drop(columns="_at").reset_index(drop=True)


def _json_rows(ok: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per prediction of records whose inputs and outputs are JSON text."""
    frame, lengths = _unwrap(_lines(ok["inputs"], unwrap=True, inputs=True))
    frame = frame.rename(columns={c: f"{c}_" for c in frame.columns if c in RESERVED})
    single = bool((lengths == 1).all())
    # one row per request (the server's usual case): Arrow unwraps the outputs' lists too
    outputs = _lines(ok["outputs"], unwrap=single)
    preds = outputs.get("predict", pd.Series([None] * len(ok)))
    frame["prediction"] = _per_row(preds, lengths)
    frame["score"] = (
        _scores(outputs["predict_proba"], lengths) if "predict_proba" in outputs else np.nan
    )
    return _request_columns(frame, ok, lengths), lengths


def _arrow(series: pd.Series):
    import pyarrow as pa

    arr = pa.array(series)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _columnar_rows(ok: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per prediction of records with ``in:``/``out:`` list columns, flattened by
    Arrow (a feature the record lacks, or an output shorter than its rows, gives nulls)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    inputs = {c[len(IN) :]: _arrow(ok[c]) for c in ok.columns if c.startswith(IN)}
    outputs = {c[len(OUT) :]: _arrow(ok[c]) for c in ok.columns if c.startswith(OUT)}
    sizes = [pc.list_value_length(a) for a in inputs.values()]
    lengths = pc.coalesce(*sizes).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    rec = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(len(rec)) - starts[rec]

    def flat(arr):
        own = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
        values = pc.list_flatten(arr)
        if arr.null_count == 0 and np.array_equal(own, lengths):
            return values
        valid = pos < own[rec]
        at = np.where(valid, (np.cumsum(own) - own)[rec] + pos, 0)
        return values.take(pa.array(at, mask=~valid))

    frame = pd.DataFrame(
        {(f"{k}_" if k in RESERVED else k): flat(a).to_pandas() for k, a in inputs.items()}
    )
    n = len(rec)
    frame["prediction"] = (
        flat(outputs["predict"]).to_pandas() if "predict" in outputs else [None] * n
    )
    frame["score"] = np.nan
    if "predict_proba" in outputs and pa.types.is_list(outputs["predict_proba"].type.value_type):
        per_row = flat(outputs["predict_proba"])  # one list of class probabilities per row
        size = pc.list_value_length(per_row).fill_null(0).to_numpy(zero_copy_only=False)
        try:
            values = pc.cast(pc.list_flatten(per_row), pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = None
        if values is not None and len(values):
            p1 = values.to_numpy(zero_copy_only=False)[
                np.minimum(np.cumsum(size) - size + 1, len(values) - 1)
            ]
            frame["score"] = np.where(size == 2, p1, np.nan)
    return _request_columns(frame, ok, lengths), lengths


def _request_columns(frame: pd.DataFrame, ok: pd.DataFrame, lengths: np.ndarray) -> pd.DataFrame:
    """The request's id, time and version on each of its rows, and the row's place in it."""
    frame["request_id"] = np.repeat(ok["request_id"].to_numpy(), lengths)
    frame["time"] = np.repeat(ok["time"].to_numpy(dtype=float), lengths)
    frame["version"] = np.repeat(ok["version"].to_numpy(), lengths)
    if (lengths > 1).any():
        frame["row"] = np.arange(int(lengths.sum())) - np.repeat(
            np.cumsum(lengths) - lengths, lengths
        )
    else:
        frame["row"] = 0
    return frame


def _scores(proba: pd.Series, lengths: np.ndarray) -> np.ndarray:
    """P(positive) of each row of a binary classifier's ``predict_proba``, else NaN."""
    if (lengths == 1).all() and len(proba):
        try:  # unwrapped by Arrow: one [p0, p1] per row
            pairs = np.stack(proba.to_numpy())
        except (ValueError, TypeError):  # ragged, missing or mixed: the general path
            pairs = None
        if (
            pairs is not None
            and pairs.ndim == 2
            and pairs.shape[1] == 2
            and pairs.dtype.kind == "f"
        ):
            return pairs[:, 1].astype(float)
    rows = pd.Series(_per_row(proba, lengths))
    return rows.map(lambda p: float(p[1]) if _seq(p) and len(p) == 2 else np.nan).to_numpy()


def _per_row(values: pd.Series, lengths: np.ndarray) -> list:
    """One list per request (or a scalar, or None) → one value per row."""
    if values.dtype != object and (lengths == 1).all():  # already one scalar per row
        return values.tolist()
    if (lengths == 1).all():
        return [v[0] if _seq(v) and len(v) else v for v in values]
    out = []
    for v, n in zip(values, lengths, strict=True):
        if _seq(v):
            out.extend(list(v[:n]) + [None] * (n - len(v)))
        else:
            out.extend([v] * n)
    return out


def feedback_frame(feedback: list[dict]) -> pd.DataFrame:
    """request_id, label, arrived (epoch seconds) from ``feedback_of``'s rows."""
    if not feedback:
        return pd.DataFrame({"request_id": [], "label": [], "arrived": []})
    f = pd.DataFrame(feedback)
    when = pd.to_datetime(f["time"], utc=True, format="ISO8601")
    f["arrived"] = (when - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return f[["request_id", "label", "arrived"]]


def with_labels(frame: pd.DataFrame, feedback: pd.DataFrame, now: float) -> pd.DataFrame:
    """``frame`` with a ``label`` column: the labels that arrived by ``now`` (simulated
    time), a list label split over a request's rows."""
    fb = feedback[feedback["arrived"] <= now] if len(feedback) else feedback
    out = frame.copy()
    if not len(fb) or not len(out):
        out["label"] = pd.Series([None] * len(out), dtype=object)
        return out
    by_id = dict(zip(fb["request_id"], fb["label"], strict=True))
    labels = [by_id.get(r) for r in out["request_id"]]
    if not any(isinstance(lab, list) for lab in labels):
        out["label"] = labels
        return out
    out["label"] = [
        (lab[i] if i < len(lab) else None) if isinstance(lab, list) else lab
        for lab, i in zip(labels, out["row"], strict=True)
    ]
    return out
