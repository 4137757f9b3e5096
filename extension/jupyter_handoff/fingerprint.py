"""Data fingerprints: a hash of the canonical bytes, the schema, the row count and statistics.

Two pushes made with the same data get the same fingerprint, whatever the index or the
memory layout, so lineage can say "same data" or "the data changed".
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def as_frame(X, name: str = "X") -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    if isinstance(X, pd.Series):
        return X.to_frame(name=X.name if X.name is not None else name)
    arr = np.asarray(X)
    if arr.ndim == 1:
        return pd.DataFrame({name: arr})
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1- or 2-dimensional, not {arr.ndim}-dimensional")
    return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])


def schema(frame: pd.DataFrame) -> list[dict]:
    return [{"name": str(c), "dtype": str(t)} for c, t in frame.dtypes.items()]


def plain_block(frame: pd.DataFrame) -> np.ndarray | None:
    """The frame as one 2-D array, when all its columns share one plain numpy dtype (a 2-D
    array's frame, a target): no copy where pandas holds them in one block. Column by column,
    pandas' indexing and conversion run in Python, holding the GIL about 1 ms for 30 columns
    while the push pickles the model on its other thread."""
    dtypes = set(frame.dtypes)
    if len(dtypes) != 1:
        return None
    (dtype,) = dtypes
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        return None
    return frame.to_numpy()


def _column_bytes(col: pd.Series | np.ndarray) -> np.ndarray:
    """What the fingerprint hashes of a column: its values' bytes, or their pandas hashes."""
    values = col if isinstance(col, np.ndarray) else col.to_numpy()
    if values.dtype.kind in "biufcmM":
        return np.ascontiguousarray(values)
    return pd.util.hash_pandas_object(col, index=False).to_numpy()


def _stats(col: pd.Series) -> dict:
    out = {"nulls": int(col.isna().sum())}
    if col.dtype.kind in "b":  # describe() gives a boolean no mean, std, min or max
        out.update(dict.fromkeys(("mean", "std", "min", "max")))
    elif col.dtype.kind in "iuf":
        # The reductions describe() makes, without its quantiles and formatting, which cost
        # 2-3 ms a column: most of a push with data, on the critical path beside the pickle.
        for k, v in (
            ("mean", col.mean()),
            ("std", col.std()),
            ("min", col.min()),
            ("max", col.max()),
        ):
            out[k] = None if v is None or pd.isna(v) else float(v)
    else:
        counts = col.astype("string").value_counts(dropna=True)
        out["distinct"] = len(counts)
        out["top"] = {str(k): int(v) for k, v in counts.head(5).items()}
    return out


def _plain_stats(frame: pd.DataFrame, whole: np.ndarray | None = None) -> dict:
    """``_stats`` of the plain float and integer columns (numpy dtypes, no NaN-able integers),
    all in one pass over a column-major block: the same sums, column by column, as pandas
    makes one column at a time (a wide frame's stats cost 20 ms that way). ``whole``: the
    frame's ``plain_block``, when it has one."""
    if whole is not None and whole.dtype.kind != "b":
        plain = list(frame.columns)
        block = np.asfortranarray(whole, dtype=np.float64)
    else:
        plain = [c for c, t in frame.dtypes.items() if isinstance(t, np.dtype) and t.kind in "iuf"]
        if not plain:
            return {}
        block = np.asfortranarray(frame[plain].to_numpy(dtype=np.float64))
    nan = np.isnan(block)
    count = block.shape[0] - nan.sum(axis=0)
    filled = np.where(nan, 0.0, block)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / count
        dev = np.where(nan, 0.0, block - mean)
        std = np.sqrt((dev * dev).sum(axis=0) / (count - 1))
    low = np.where(nan, np.inf, block).min(axis=0)
    high = np.where(nan, -np.inf, block).max(axis=0)
    out = {}
    for j, c in enumerate(plain):
        n = int(count[j])
        out[c] = {
            "nulls": int(block.shape[0] - n),
            "mean": float(mean[j]) if n else None,
            "std": float(std[j]) if n > 1 else None,
            "min": float(low[j]) if n else None,
            "max": float(high[j]) if n else None,
        }
    return out


def fingerprint(frame: pd.DataFrame) -> dict:
    h = hashlib.sha256()
    whole = plain_block(frame)
    for name, col in frame.items() if whole is None else zip(frame.columns, whole.T, strict=True):
        h.update(f"{name}\0{col.dtype}\0".encode())
        h.update(_column_bytes(col))
    plain = _plain_stats(frame, whole)
    return {
        "fingerprint": h.hexdigest(),
        "schema": schema(frame),
        "rows": len(frame),
        "stats": {str(c): plain.get(c) or _stats(frame[c]) for c in frame.columns},
    }
