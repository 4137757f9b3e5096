"""Validate evaluation data and turn it into bundle members with fingerprints."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .bundle_writer import _parquet, _sample
from .errors import HandoffUsageError
from .fingerprint import as_frame, fingerprint, schema


def _frame(obj, name: str) -> pd.DataFrame:
    try:
        frame = as_frame(obj, name)
    except (ValueError, TypeError) as e:
        raise HandoffUsageError(
            f"{name} cannot be used as a table ({e}).", f"Pass {name} as a DataFrame or 2-D array."
        ) from None
    frame = frame.copy(deep=False)
    frame.columns = [str(c) for c in frame.columns]
    if frame.columns.duplicated().any():
        dupes = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise HandoffUsageError(f"{name} has duplicate column names: {dupes}.")
    return frame.reset_index(drop=True)


def _target(y, n: int, name: str = "y") -> pd.DataFrame:
    arr = y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise HandoffUsageError(
            f"{name} must be one column, but it has shape {arr.shape}.",
            "Pass the target as a Series or 1-D array.",
        )
    if len(arr) != n:
        raise HandoffUsageError(
            f"X has {n} rows but {name} has {len(arr)}.",
            "Pass X and y from the same split, e.g. --data X_test y_test.",
        )
    missing = int(pd.isna(arr).sum())
    if missing:
        raise HandoffUsageError(
            f"{name} has {missing} missing values (NaN).",
            "Drop those rows from X and y before pushing.",
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise HandoffUsageError(f"{name} holds infinite values.", "Remove them before pushing.")
    label = str(getattr(y, "name", None) or name)
    return pd.DataFrame({label: arr})


def _sensitive(sensitive, X: pd.DataFrame, X_original) -> pd.DataFrame:
    if isinstance(sensitive, str):
        sensitive = [sensitive]
    if isinstance(sensitive, (list, tuple)) and all(isinstance(s, str) for s in sensitive):
        missing = [s for s in sensitive if s not in X.columns]
        if missing:
            raise HandoffUsageError(
                f"Sensitive column(s) {missing} are not columns of X.",
                f"X has: {', '.join(list(X.columns)[:20])}.",
            )
        return X[list(sensitive)].copy()
    frame = _frame(sensitive, "sensitive")
    if len(frame) != len(X):
        raise HandoffUsageError(
            f"X has {len(X)} rows but the sensitive data has {len(frame)}.",
            "Pass sensitive features aligned with X.",
        )
    return frame


def prepare(X, y, sensitive, reference, max_rows: int, reference_rows: int):
    """Return (members, data fingerprints, signature). Fingerprints cover all the data given;
    the stored sample is bounded by ``max_rows``."""
    members: dict[str, bytes] = {}
    fps: dict[str, dict] = {}
    signature: dict = {}
    if X is None and y is not None:
        raise HandoffUsageError("y was given without X.", "Use --data X y.")
    if X is None:
        if sensitive is not None:
            raise HandoffUsageError("--sensitive needs --data X y.")
        return members, fps, signature
    Xf = _frame(X, "X")
    if len(Xf) == 0:
        raise HandoffUsageError("X is empty.", "Push at least one row of evaluation data.")
    signature = {"columns": schema(Xf)}
    parts = {"X": Xf}
    if y is not None:
        parts["y"] = _target(y, len(Xf))
    if sensitive is not None:
        parts["sensitive"] = _sensitive(sensitive, Xf, X)
    keep = _sample(Xf, max_rows).index
    for role, frame in parts.items():
        fps[role] = fingerprint(frame)
        members[f"data/{role}.parquet"] = _parquet(frame.loc[keep].reset_index(drop=True))
    if reference is not None:
        ref = _frame(reference, "reference")
        fps["reference_X"] = fingerprint(ref)
        members["data/reference_X.parquet"] = _parquet(
            _sample(ref, reference_rows).reset_index(drop=True)
        )
    for role, fp in fps.items():
        fp["stored_rows"] = min(fp["rows"], reference_rows if role == "reference_X" else max_rows)
    return members, fps, signature
