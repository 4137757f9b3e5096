"""Validate evaluation data and turn it into bundle members with fingerprints."""

from __future__ import annotations

import datetime
import decimal
import io

import numpy as np
import pandas as pd

from handoff_agent.manifest import data_member

from .errors import HandoffUsageError
from .fingerprint import as_frame, fingerprint, plain_block, schema


def _parquet(frame: pd.DataFrame) -> bytes:
    """Dictionary-encoded only where values repeat by nature: on float columns, where they
    rarely do, trying it more than doubled the write (2,000 rows by 30: 3.7 ms, 1.6 without)
    and made the file larger. A frame of one plain dtype goes to Arrow without pandas'
    per-column conversion (``plain_block``); it reads back the same."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    whole = plain_block(frame)
    if whole is None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    else:
        columns = [pa.array(col, from_pandas=True) for col in whole.T]
        table = pa.table(columns, names=[str(c) for c in frame.columns])
    repeats = [str(c) for c, dtype in frame.dtypes.items() if dtype.kind != "f"]
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", use_dictionary=repeats)
    return buf.getvalue()


def _sample(frame: pd.DataFrame, limit: int, seed: int = 0) -> pd.DataFrame:
    if len(frame) <= limit:
        return frame
    return frame.sample(n=limit, random_state=seed).sort_index()


def input_kind(X) -> str:
    """What the model is fed: ``text`` (1-D strings: a text pipeline), ``array`` (a 2-D array
    without column names) or ``table`` (a DataFrame). The worker hands the model the same kind."""
    if isinstance(X, pd.DataFrame):
        return "table"
    if isinstance(X, pd.Series):
        values = X.to_numpy()
    elif isinstance(X, (list, tuple)) and X and all(isinstance(v, str) for v in X[:1000]):
        return "text"
    else:
        try:
            values = np.asarray(X)
        except (ValueError, TypeError):
            return "table"  # ragged or odd: _frame says what is wrong with it
    if values.ndim == 1:
        return "text" if _strings(values) else "table"
    return "array" if values.ndim == 2 else "table"


def fits(X, model, features) -> None:
    """X's mistakes against the model, said at push rather than by every check: a text
    pipeline given a DataFrame (its vectorizer reads the column names as the texts), an X
    of another width than the model took (an array's, or a table's when the model was fitted
    without column names: ``features`` None)."""
    try:  # a Pipeline's first step, else the model itself
        first = model.steps[0][1] if isinstance(model.steps, list) else model
    except Exception:
        first = model
    if isinstance(X, pd.DataFrame) and callable(getattr(first, "build_analyzer", None)):
        column = str(X.columns[0]) if X.shape[1] == 1 else "text"
        raise HandoffUsageError(
            f"The model starts with {type(first).__name__}, which takes texts, but X is a "
            f"DataFrame of {_count(list(X.columns))}.",
            f"Pass the texts as a Series or list: X[{column!r}], not X[[{column!r}]].",
        )
    try:
        width = getattr(model, "n_features_in_", None)
    except Exception:  # a property that raises on an odd model
        width = None
    kind = input_kind(X)
    # An array has no column names to check: its width is all there is, whatever the model
    # was fitted on. A table's names are checked against ``features`` when they are known.
    if isinstance(width, int) and (kind == "array" or (features is None and kind == "table")):
        shape = getattr(X, "shape", None) or np.asarray(X, dtype=object).shape
        if len(shape) == 2 and shape[1] != width:
            names = ""
            if features:
                names = f" ({', '.join(map(str, features[:8]))}{', …' * (len(features) > 8)})"
            raise HandoffUsageError(
                f"X has {shape[1]} columns; the model was fitted on {width}{names}.",
                "Pass the columns it was fitted on, in the same order.",
            )


def _strings(values: np.ndarray) -> bool:
    if values.dtype.kind in "US":
        return True
    if values.dtype.kind != "O" and not isinstance(values.dtype, pd.StringDtype):
        return False
    head = [v for v in values[:1000] if v is not None and not pd.isna(v)]
    return bool(head) and all(isinstance(v, str) for v in head)


def _frame(obj, name: str) -> pd.DataFrame:
    if type(obj).__module__.startswith("scipy.sparse"):  # np.asarray makes it 0-dimensional
        raise HandoffUsageError(
            f"{name} is a sparse matrix; the evaluation data is stored as a table.",
            "Push the pipeline with its vectorizer and the raw data (e.g. the texts), or "
            f"pass {name}.toarray() if it is small.",
        )
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
        raise HandoffUsageError(
            f"{name} has more than one column named {', '.join(map(repr, dupes[:5]))}.",
            f"Give each column its own name, or drop the copies: "
            f"{name}.loc[:, ~{name}.columns.duplicated()].",
        )
    return frame.reset_index(drop=True)


def _fitted_columns(Xf: pd.DataFrame, features: list[str], sensitive) -> pd.DataFrame:
    """X with the model's columns first, in the order it was fitted on (the model refuses
    another order); a column it lacks, or one it was not fitted on and not named by
    ``--sensitive``, is a mistake said now rather than by every check that predicts."""
    lacking = [f for f in features if f not in Xf.columns]
    if lacking:
        raise HandoffUsageError(
            f"X lacks {_count(lacking)} the model was fitted on: {_names(lacking)}.",
            "Pass the evaluation data with the training columns (model.feature_names_in_).",
        )
    given = sensitive if isinstance(sensitive, (list, tuple)) else [sensitive]
    named = {s for s in given if isinstance(s, str)}
    known = set(features)
    extra = [c for c in Xf.columns if c not in known and c not in named]
    if extra:
        raise HandoffUsageError(
            f"X has {_count(extra)} the model was not fitted on: {_names(extra)}.",
            "Drop it from X, or name a group column with --sensitive (it groups the fairness "
            "check and is kept from the model).",
        )
    if list(Xf.columns[: len(features)]) == features:
        return Xf
    return Xf[[*features, *(c for c in Xf.columns if c not in known)]]


def _reference_columns(ref: pd.DataFrame, Xf: pd.DataFrame, features, sensitive) -> None:
    """The reference is the data the model was trained on, compared with X column by column:
    one lacking X's columns (another split's, or y given by mistake) is said now, not as
    drift warnings on the columns it lacks."""
    given = sensitive if isinstance(sensitive, (list, tuple)) else [sensitive]
    named = {s for s in given if isinstance(s, str)}
    want = features if features is not None else [c for c in Xf.columns if c not in named]
    lacking = [c for c in want if c not in ref.columns]
    if lacking:
        whose = "the model was fitted on" if features is not None else "of X"
        raise HandoffUsageError(
            f"The reference lacks {_count(lacking)} {whose}: {_names(lacking)}.",
            "Pass the training data (or a sample of it) with X's columns as the reference.",
        )


def _count(columns: list) -> str:
    return f"{len(columns)} column{'s' * (len(columns) > 1)}"


def _names(columns: list) -> str:
    return ", ".join(map(repr, columns[:5])) + (" …" if len(columns) > 5 else "")


# Values a column of evaluation data may hold, by the kind they count as
PLAIN_KINDS = (
    (bool, "boolean"),
    ((int, float, np.number), "numeric"),
    ((str,), "text"),
    ((bytes,), "bytes"),
    ((datetime.date, np.datetime64), "date"),
    ((decimal.Decimal,), "numeric"),
)


def _interval(col: pd.Series) -> bool:
    dtype = col.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        dtype = dtype.categories.dtype
    return isinstance(dtype, pd.IntervalDtype)


def _column_problem(frame: pd.DataFrame) -> tuple[str, str, str] | None:
    """(column, what is wrong, what to do) for the first column Parquet cannot store."""
    for name in frame.columns:
        col = frame[name]
        if _interval(col):
            return name, "holds intervals (pd.cut's bins)", "Give pd.cut labels=[...]."
        if col.dtype != object:
            continue
        kinds = set()
        for v in col:
            if v is None or (isinstance(v, float) and v != v):
                continue
            kind = next((k for types, k in PLAIN_KINDS if isinstance(v, types)), None)
            if kind is None:
                return name, f"holds {type(v).__name__} values", "Keep numbers, text or dates."
            kinds.add(kind)
        if len(kinds) > 1:
            shown = " and ".join(sorted(kinds))
            return name, f"mixes {shown} values", f"Give {name!r} one type, e.g. .astype(str)."
    return None


ROLE_NAMES = {"X": "X", "y": "y", "sensitive": "The sensitive data", "reference_X": "reference"}


def _stored(role: str, frame: pd.DataFrame, store) -> tuple[dict, bytes]:
    """The frame's fingerprint and the Parquet of ``store(frame)``: a column they cannot take
    (mixed types, objects, intervals) is one line naming it, not Arrow's traceback."""
    try:
        return fingerprint(frame), _parquet(store(frame))
    except (TypeError, ValueError, NotImplementedError):
        problem = _column_problem(frame)
        if problem is None:
            raise
        name, what, todo = problem
        raise HandoffUsageError(
            f"{ROLE_NAMES.get(role, role)} column {name!r} {what}: it cannot be stored as "
            "evaluation data.",
            todo,
        ) from None


def _known_labels(y: pd.Series, classes) -> None:
    try:
        known = set(np.asarray(classes).tolist()) if classes is not None else None
        given = set(pd.unique(y).tolist())
    except TypeError:  # labels that do not hash: the checks will say
        return
    if known and given and not given & known:
        knew = ", ".join(repr(v) for v in sorted(known, key=str)[:5])
        if y.dtype.kind == "f" and len(given) > max(20, 2 * len(known)):
            some = ", ".join(f"{v:.4g}" for v in list(given)[:2])
            raise HandoffUsageError(
                f"y holds {len(given):,} distinct numbers (e.g. {some}), as a regression "
                f"target would; the model is a classifier predicting {knew}.",
                "Pass the class labels as y (y_test), not probabilities or scores.",
            )
        show = ", ".join(repr(v) for v in sorted(given, key=str)[:5])
        raise HandoffUsageError(
            f"y holds none of the labels the model predicts: y has {show}; the model {knew}.",
            "Encode y as it was for training (e.g. 0/1, not 'no'/'yes').",
        )


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


def _sensitive(sensitive, X: pd.DataFrame) -> pd.DataFrame:
    """Sensitive features as a frame aligned with X. ``sensitive`` is a column name of X, a
    Series or array (or a DataFrame), or a list mixing column names and Series/arrays."""
    if isinstance(sensitive, str) or not isinstance(sensitive, (list, tuple)):
        sensitive = [sensitive]
    elif sensitive and all(np.ndim(s) == 0 and not isinstance(s, str) for s in sensitive):
        sensitive = [np.asarray(sensitive)]  # one array given as a plain list
    parts = []
    for i, item in enumerate(sensitive):
        if isinstance(item, str):
            if item not in X.columns:
                raise HandoffUsageError(
                    f"Sensitive column {item!r} is not a column of X, nor a variable.",
                    f"X has: {', '.join(list(X.columns)[:20])}"
                    f"{f' … ({len(X.columns):,} columns)' if len(X.columns) > 20 else ''}. "
                    "Or pass a Series aligned with X.",
                )
            parts.append(X[[item]])
            continue
        label = getattr(item, "name", None) if isinstance(item, pd.Series) else None
        frame = _frame(
            item, str(label or ("sensitive" if len(sensitive) == 1 else f"sensitive{i}"))
        )
        if len(frame) != len(X):
            raise HandoffUsageError(
                f"X has {len(X)} rows but the sensitive data has {len(frame)}.",
                "Pass sensitive features aligned with X (same rows, same order).",
            )
        parts.append(frame)
    out = pd.concat([p.reset_index(drop=True) for p in parts], axis=1)
    if out.columns.duplicated().any():  # before anything reads a column by its name
        raise HandoffUsageError(
            f"Two sensitive features are named {out.columns[out.columns.duplicated()][0]!r}.",
            "Name each once, and give each Series its own name.",
        )
    for name in out.columns:  # pd.cut's bins, as fairness hints suggest: group labels
        if _interval(out[name]):
            out[name] = out[name].astype(str)
    return out


def prepare(
    X, y, sensitive, reference, max_rows: int, reference_rows: int, features=None, classes=None
):
    """Return (members, data fingerprints, signature). Fingerprints cover all the data given;
    the stored sample is bounded by ``max_rows``. ``features`` are the columns the model was
    fitted on, when known: a sensitive column of X outside them is kept out of the stored X
    (the model never saw it) but still groups the fairness check. ``classes``: the labels a
    classifier knows; a y with none of them is a mistake said now, not by every check."""
    members: dict[str, bytes] = {}
    fps: dict[str, dict] = {}
    signature: dict = {}
    if X is None and y is not None:
        raise HandoffUsageError("y was given without X.", "Use --data X y.")
    if X is None:
        if sensitive is not None:
            raise HandoffUsageError("--sensitive needs --data X y.")
        return members, fps, signature
    kind = input_kind(X)
    Xf = _frame(X, "text" if kind == "text" and getattr(X, "name", None) is None else "X")
    if len(Xf) == 0:
        raise HandoffUsageError("X is empty.", "Push at least one row of evaluation data.")
    if kind == "text":
        Xf = Xf.astype({Xf.columns[0]: object})
    parts, unused = {"X": Xf}, []
    if features is not None and kind == "table":
        Xf = parts["X"] = _fitted_columns(Xf, features, sensitive)
    if y is not None:
        parts["y"] = _target(y, len(Xf))
        _known_labels(parts["y"].iloc[:, 0], classes)
    if sensitive is not None:
        parts["sensitive"] = _sensitive(sensitive, Xf)
        if features is not None and kind == "table":
            unused = [c for c in parts["sensitive"].columns if c in Xf and c not in features]
            Xf = parts["X"] = Xf.drop(columns=unused)
    signature = {"columns": schema(Xf)}
    if kind != "table":
        signature["input"] = kind
    kept = _sample(Xf, max_rows)

    def stored(frame):
        return frame if kept is Xf else frame.loc[kept.index].reset_index(drop=True)

    for role, frame in parts.items():  # each with a RangeIndex, aligned with X
        fps[role], members[data_member(role)] = _stored(role, frame, stored)
    if reference is not None:
        ref = _frame(reference, "reference")
        if kind == "text":
            if input_kind(reference) != "text":
                raise HandoffUsageError(
                    "X is text but the reference data is not.",
                    "Pass reference texts the same way as X, e.g. a list or Series of strings.",
                )
            ref.columns = list(Xf.columns)
        else:
            _reference_columns(ref, Xf, features if kind == "table" else None, sensitive)
        ref = ref.drop(columns=[c for c in unused if c in ref.columns])
        fps["reference_X"], members[data_member("reference_X")] = _stored(
            "reference_X", ref, lambda f: _sample(f, reference_rows).reset_index(drop=True)
        )
    for role, fp in fps.items():
        fp["stored_rows"] = min(fp["rows"], reference_rows if role == "reference_X" else max_rows)
    return members, fps, signature
