"""Permutation importance with stacked predicts, budgeted by time.

``sklearn.inspection.permutation_importance`` calls predict once per feature and repeat; a
forest pays its per-call overhead (threads, validation, tree walks set up) each time. Here
every permuted copy is stacked into one frame and scored with one predict call (in chunks of
at most ``CHUNK_BYTES``), which gives the same numbers for the same permutations.

The budget: the predict over the rows and one over a few of them are timed first, which gives
a call's fixed cost and its cost per row; when all copies would take longer than ``seconds``,
fewer rows are used (never fewer than ``min_rows``). When even ``min_rows`` over every column
would take longer (wide data: 2,000 columns), the columns to rank are chosen first
(``_screen``): each is shuffled once on a few rows (``SCREEN_CELLS`` ÷ columns: its cost
grows with the width, not its square), and the ``RANKED`` that move the model's response
most are ranked, on as many rows as the budget left affords. The ranking this gives
against the unbudgeted one is measured by bench/checks.py (docs/scaling.md).

A model with a ``score`` of its own (``stackable`` is False) cannot be scored from stacked
predictions: ``scored_importance`` calls its score once per column and shuffle, as sklearn
does, within the same budget: a shuffle of every column first, then the next round, until
``seconds`` are spent; what it cut (columns never shuffled, rounds not done) it says.

A stacked predict of a model made of scikit-learn's own estimators is split by rows over
threads, one per core this process may use (``predict_rows``): their predicts release the
GIL, so this check, usually a version's longest, uses the cores its sibling checks have left.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numpy as np
import pandas as pd

from ._layout import row_major
from ._util import take_rows
from .loads import detect_task

CHUNK_BYTES = 256 << 20  # a stacked chunk's size at most: wide data gets more predict calls
SPLIT_ROWS = 2048  # a thread's share at least: on fewer rows its hand-off costs what it saves
RANKED = 50  # columns ranked when wide data is screened: data this narrow never is
SCREEN_CELLS = 50_000  # rows x columns the screen shuffles: 25 rows of 2,000 columns
MIN_SCREEN_ROWS = 10  # rows the screen shuffles each column on, at least


def stackable(model) -> bool:
    """True when the model's ``score`` is accuracy or R² of its own ``predict`` (sklearn's
    mixins, also at the end of a Pipeline), or it has no ``score`` (it is then scored by
    those of its predict), so scoring stacked predictions is the same."""
    from sklearn.base import ClassifierMixin, RegressorMixin

    final = model
    steps = getattr(model, "steps", None)
    if steps and type(model).__name__ == "Pipeline":
        final = steps[-1][1]
    score = getattr(type(final), "score", None)
    return callable(getattr(model, "predict", None)) and score in (
        None,
        ClassifierMixin.score,
        RegressorMixin.score,
    )


def _sklearn_made(model) -> bool:
    """True when the model and every estimator inside it (pipeline steps, column transformers)
    are scikit-learn's own classes, whose predicts may run in two threads at once: a class of
    someone else's may keep state between calls."""
    try:
        parts = [model, *model.get_params(deep=True).values()]
    except Exception:  # not an estimator, or one whose parameters cannot be read
        return False
    return all(
        type(p).__module__.startswith("sklearn.")
        for p in parts
        if hasattr(p, "fit") and not isinstance(p, type)
    )


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def predict_rows(model, respond, X):
    """``respond(X)`` (the model's predict, predict_proba or decision_function), the rows of X
    split over threads, ``SPLIT_ROWS`` at least each, when ``model`` is ``_sklearn_made``: the
    same array as one call gives, since each row is predicted on its own. scikit-learn's tree
    models get X row-major (``row_major``)."""
    X = row_major(model, X)
    threads = min(_cores(), len(X) // SPLIT_ROWS)
    if threads < 2 or not _sklearn_made(model):
        return np.asarray(respond(X))
    bounds = np.linspace(0, len(X), threads + 1).astype(int)
    parts = [take_rows(X, slice(a, b)) for a, b in pairwise(bounds)]
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="predict") as pool:
            futures = [pool.submit(respond, part) for part in parts]
    except RuntimeError:  # no thread to start under the sandbox's process or memory limit
        return np.asarray(respond(X))
    return np.concatenate([np.asarray(f.result()) for f in futures])


def _metric(model, scoring: str | None):
    from sklearn.metrics import accuracy_score, r2_score

    if scoring == "accuracy" or (scoring is None and detect_task(model) == "classification"):
        return accuracy_score
    return r2_score


def _one_dtype(X: pd.DataFrame) -> bool:
    """True when every column of X has the same numpy (not extension) numeric dtype."""
    dtypes = set(X.dtypes)
    if len(dtypes) != 1:
        return False
    dtype = dtypes.pop()
    return isinstance(dtype, np.dtype) and dtype.kind in "biuf"


def _stack(X, columns: list[int], perms: list[np.ndarray]):
    """One block of X per (column, permutation) pair, that column's rows permuted."""
    n, blocks = len(X), len(columns) * len(perms)
    position = {j: i for i, j in enumerate(columns)}
    if isinstance(X, pd.DataFrame) and _one_dtype(X):
        # one numpy dtype: stacked as one array, as wrapping it makes the frame pandas
        # would consolidate the columns into (a column at a time, wide data took minutes)
        values = _stack(X.to_numpy(), columns, perms)
        return pd.DataFrame(values, columns=X.columns, copy=False)
    if isinstance(X, pd.DataFrame):
        out = {}
        for j in range(X.shape[1]):
            col = X.iloc[:, j]
            values = np.tile(col.to_numpy(), blocks)
            if j in position:
                b = position[j] * len(perms)
                for r, p in enumerate(perms):
                    values[(b + r) * n : (b + r + 1) * n] = col.to_numpy()[p]
            out[j] = pd.Series(values, dtype=col.dtype)
        frame = pd.DataFrame(out)
        frame.columns = X.columns
        return frame
    values = np.tile(X, (blocks, 1))
    for i, j in enumerate(columns):
        for r, p in enumerate(perms):
            b = i * len(perms) + r
            values[b * n : (b + 1) * n, j] = X[p, j]
    return values


def _response(model):
    """What the screen compares: a classifier's probabilities when it has them, else the
    model's predict."""

    if detect_task(model) == "classification" and hasattr(model, "predict_proba"):
        return model.predict_proba
    return model.predict


def _moved(base: np.ndarray, pred: np.ndarray) -> float:
    """How far ``pred`` is from ``base``: the mean absolute change of numbers, else the
    share of labels that changed."""
    if base.dtype.kind in "fc":
        return float(np.mean(np.abs(pred - base)))
    return float(np.mean(pred != base))


def _screen(model, X, rows: int, random_state: int) -> tuple[np.ndarray, int]:
    """Per column, how much shuffling it once on ``rows`` rows moves the model's response (a
    cheap score that chooses which columns of wide data are worth ranking), and the calls."""
    idx = np.sort(np.random.default_rng(random_state).choice(len(X), rows, replace=False))
    X = take_rows(X, idx)
    respond = _response(model)
    base = np.asarray(respond(X))
    perm = [np.random.default_rng(random_state).permutation(rows)]
    width = X.shape[1]
    per_chunk = max(1, int(CHUNK_BYTES // (_row_bytes(X) * rows)))
    moved, calls = np.zeros(width), 1
    for start in range(0, width, per_chunk):
        cols = list(range(start, min(width, start + per_chunk)))
        pred = predict_rows(model, respond, _stack(X, cols, perm))
        calls += 1
        for i, j in enumerate(cols):
            moved[j] = _moved(base, pred[i * rows : (i + 1) * rows])
    return moved, calls


def _row_bytes(X) -> float:
    if isinstance(X, pd.DataFrame):
        return max(1.0, X.memory_usage(index=False).sum() / max(len(X), 1))
    return X.itemsize * X.shape[1]


def _ranked(model, X, n, width, cost, seconds, n_repeats, random_state):
    """The columns to rank, the screen's rows and its predict calls: every column (None, 0)
    when ``n`` rows (min(len(X), min_rows)) over all of them fit in ``seconds``, else the
    ``RANKED`` that ``_screen`` finds moving the response most. The screen's rows depend on
    the width only (``SCREEN_CELLS``), so the same data ranks the same columns on a busy
    machine; ``cost(rows, copies)`` estimates a predict's seconds."""
    if width <= RANKED or cost(n, width * n_repeats) <= seconds:
        return list(range(width)), None, 0
    screen_rows = min(max(SCREEN_CELLS // width, MIN_SCREEN_ROWS), n)
    moved, calls = _screen(model, X, screen_rows, random_state)
    return sorted(np.argsort(-moved, kind="stable")[:RANKED].tolist()), screen_rows, calls


def permutation_importance(
    model,
    X,
    y,
    *,
    n_repeats: int = 3,
    seconds: float | None = None,
    min_rows: int = 500,
    scoring: str | None = None,
    random_state: int = 0,
) -> dict:
    """Importance (mean, std of the score's drop) per column of X, with stacked predicts.

    Returns ``{"mean", "std", "rows", "budgeted", "predict_calls", "columns",
    "screen_rows"}``; ``rows`` < len(X) when the time budget cut the rows; ``columns`` the
    columns ranked (all of them unless wide data was screened: ``screen_rows`` not None, and
    the others' mean and std NaN)."""
    y = np.asarray(y)
    metric = _metric(model, scoring)
    n, width = len(X), X.shape[1]
    t0 = time.perf_counter()
    base = metric(y, model.predict(X))
    t_all = time.perf_counter() - t0
    rows, budgeted, calls = n, False, 1
    ranked, screen_rows = list(range(width)), None
    if seconds is not None:
        # A predict's cost is a fixed part (per call) and a part per row; stacking pays the
        # fixed part once, so the estimate needs both: a second, small predict gives them.
        few = max(1, min(n // 10, 50))
        t0 = time.perf_counter()
        model.predict(take_rows(X, slice(few)))
        t_few = time.perf_counter() - t0
        calls += 1
        per_row = max((t_all - t_few) / max(n - few, 1), t_all / n / 10, 1e-9)
        fixed = max(t_few - few * per_row, 0.0)
        t0 = time.perf_counter()
        ranked, screen_rows, screen_calls = _ranked(
            model,
            X,
            min(n, min_rows),
            width,
            lambda r, copies: fixed + per_row * r * copies,
            seconds,
            n_repeats,
            random_state,
        )
        spent, calls = time.perf_counter() - t0, calls + screen_calls
        affordable = int((seconds - spent - fixed) / (per_row * len(ranked) * n_repeats))
        if affordable < n:
            rows = max(min(n, min_rows), affordable)
            budgeted = rows < n
    if rows < n:
        idx = np.sort(np.random.default_rng(random_state).choice(n, rows, replace=False))
        X = take_rows(X, idx)
        y = y[idx]
        base = metric(y, model.predict(X))
    rng = np.random.default_rng(random_state)
    perms = [rng.permutation(rows) for _ in range(n_repeats)]
    per_chunk = max(1, int(CHUNK_BYTES // (_row_bytes(X) * rows * n_repeats)))
    drops = np.full((width, n_repeats), np.nan)
    for start in range(0, len(ranked), per_chunk):
        cols = ranked[start : start + per_chunk]
        pred = predict_rows(model, model.predict, _stack(X, cols, perms))
        calls += 1
        for i, j in enumerate(cols):
            for r in range(n_repeats):
                b = i * n_repeats + r
                drops[j, r] = base - metric(y, pred[b * rows : (b + 1) * rows])
    return {
        "mean": drops.mean(axis=1),
        "std": drops.std(axis=1),
        "rows": rows,
        "budgeted": budgeted,
        "predict_calls": calls + (rows < n),
        "columns": ranked,
        "screen_rows": screen_rows,
    }


def _shuffled(X, j: int, perm: np.ndarray):
    """X with column ``j``'s values in the order ``perm`` (its dtype kept); of a 1-D X (text:
    the one feature), the values themselves."""
    if getattr(X, "ndim", 2) == 1:
        values = np.asarray(X)[perm]
        return pd.Series(values, name=X.name, index=X.index) if hasattr(X, "index") else values
    if isinstance(X, pd.DataFrame):
        out = X.copy()
        out.isetitem(j, X.iloc[:, j].iloc[perm].set_axis(X.index))
        return out
    out = np.array(X, copy=True)
    out[:, j] = X[perm, j]
    return out


def scored_importance(
    score,
    X,
    y,
    *,
    n_repeats: int = 3,
    seconds: float | None = None,
    random_state: int = 0,
) -> dict:
    """Importance (mean, std of the drop in ``score(X, y)``) per column of X (a 1-D X is one
    column), one ``score`` call per column and shuffle, in rounds: every column once, then
    again, ``n_repeats`` rounds. With ``seconds``, no call starts once they are spent (the
    first shuffle always runs), so a slow score is cut, not waited for.

    Returns ``{"mean", "std", "columns", "repeats", "budgeted"}``: ``columns`` those shuffled
    at least once (the others' mean and std NaN), ``repeats`` the shuffles per column."""
    start = time.perf_counter()
    base = score(X, y)
    width = 1 if getattr(X, "ndim", 2) == 1 else X.shape[1]
    rng = np.random.default_rng(random_state)
    drops: list[list[float]] = [[] for _ in range(width)]
    budgeted = False
    for _ in range(n_repeats):
        for j in range(width):
            spent = time.perf_counter() - start
            if seconds is not None and spent >= seconds and drops[0]:
                budgeted = True
                break
            drops[j].append(base - score(_shuffled(X, j, rng.permutation(len(X))), y))
        if budgeted:
            break
    repeats = [len(d) for d in drops]
    return {
        "mean": np.array([np.mean(d) if d else np.nan for d in drops]),
        "std": np.array([np.std(d) if d else np.nan for d in drops]),
        "columns": [j for j in range(width) if repeats[j]],
        "repeats": repeats,
        "budgeted": budgeted,
    }
