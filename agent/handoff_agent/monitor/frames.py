"""The prediction log (one record per request, inputs and outputs as JSON columns) and the
feedback, as flat frames with one row per prediction: the feature columns, ``prediction``,
``score`` (P(positive) of a binary classifier), ``label`` and the request's time.

The JSON of a whole window is parsed in one ``json.loads`` call (a C loop), and each column is
flattened once, so a window of a million rows costs seconds, not minutes.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime

import numpy as np
import pandas as pd

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


def _parse(series: pd.Series) -> list:
    texts = series.fillna("null").astype(str)
    return json.loads("[" + ",".join(texts.tolist()) + "]")


def _flat(values: list, lengths: np.ndarray) -> list:
    """One list per request (or a scalar, or None) → one value per row."""
    out = []
    for v, n in zip(values, lengths, strict=True):
        if isinstance(v, list):
            out.extend(v[:n] + [None] * (n - len(v)))
        else:
            out.extend([v] * n)
    return out


def rows(log: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(requests, rows) of a slice of the log. ``requests`` keeps one row per request (time,
    status, latency, version); ``rows`` one row per prediction."""
    requests = log[["request_id", "time", "status", "latency_ms", "version"]].reset_index(drop=True)
    ok = log[log["status"].fillna(200) < 400].reset_index(drop=True)
    if ok.empty:
        return requests, pd.DataFrame({"request_id": [], "time": [], "prediction": []})
    inputs = _parse(ok["inputs"])
    outputs = _parse(ok["outputs"])
    names = list(dict.fromkeys(k for d in inputs[:1000] if isinstance(d, dict) for k in d))
    first = names[0] if names else None
    lengths = np.asarray(
        [
            len(d[first]) if isinstance(d, dict) and isinstance(d.get(first), list) else 1
            for d in inputs
        ]
    )
    if (lengths == 1).all():  # the common case: one row per request, no flattening
        frame = pd.DataFrame.from_records(
            [{k: (v[0] if isinstance(v, list) else v) for k, v in d.items()} for d in inputs]
        )
    else:
        frame = pd.DataFrame(
            {
                n: _flat([d.get(n) if isinstance(d, dict) else None for d in inputs], lengths)
                for n in names
            }
        )
    frame = frame.rename(columns={c: f"{c}_" for c in frame.columns if c in RESERVED})
    preds = [o.get("predict") if isinstance(o, dict) else None for o in outputs]
    frame["prediction"] = _flat(preds, lengths)
    probas = [o.get("predict_proba") if isinstance(o, dict) else None for o in outputs]
    flat_p = _flat(probas, lengths)
    frame["score"] = [p[1] if isinstance(p, list) and len(p) == 2 else np.nan for p in flat_p]
    frame["score"] = frame["score"].astype(float)
    frame["request_id"] = np.repeat(ok["request_id"].to_numpy(), lengths)
    frame["time"] = np.repeat(ok["time"].to_numpy(dtype=float), lengths)
    frame["version"] = np.repeat(ok["version"].to_numpy(), lengths)
    frame["row"] = np.concatenate([np.arange(n) for n in lengths]) if len(lengths) else []
    return requests, frame


def feedback_frame(feedback: list[dict]) -> pd.DataFrame:
    """request_id, label, arrived (epoch seconds) from ``feedback_of``'s rows."""
    if not feedback:
        return pd.DataFrame({"request_id": [], "label": [], "arrived": []})
    f = pd.DataFrame(feedback)
    f["arrived"] = [_epoch(x) for x in f["time"]]
    return f[["request_id", "label", "arrived"]]


def _epoch(value) -> float:
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


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
    out["label"] = [
        (lab[i] if i < len(lab) else None) if isinstance(lab, list) else lab
        for lab, i in zip(labels, out["row"], strict=True)
    ]
    return out


def chain(*lists):
    return list(itertools.chain.from_iterable(lists))
