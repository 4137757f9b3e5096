"""Permutation importance with stacked predicts, budgeted by time.

``sklearn.inspection.permutation_importance`` calls predict once per feature and repeat; a
forest pays its per-call overhead (threads, validation, tree walks set up) each time. Here
every permuted copy is stacked into one frame and scored with one predict call (in chunks of
at most ``CHUNK_BYTES``), which gives the same numbers for the same permutations.

The budget: the predict over the rows and one over a few of them are timed first, which gives
a call's fixed cost and its cost per row; when all copies would take longer than ``seconds``,
fewer rows are used (never fewer than ``min_rows``). The ranking this gives
against the unbudgeted one is measured by bench/checks.py (docs/scaling.md).

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

CHUNK_BYTES = 256 << 20  # a stacked chunk's size at most: wide data gets more predict calls
SPLIT_ROWS = 2048  # a thread's share at least: on fewer rows its hand-off costs what it saves


def stackable(model) -> bool:
    """True when the model's ``score`` is accuracy or R² of its own ``predict`` (sklearn's
    mixins, also at the end of a Pipeline), so scoring stacked predictions is the same."""
    from sklearn.base import ClassifierMixin, RegressorMixin

    final = model
    steps = getattr(model, "steps", None)
    if steps and type(model).__name__ == "Pipeline":
        final = steps[-1][1]
    score = getattr(type(final), "score", None)
    return callable(getattr(model, "predict", None)) and score in (
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
    from sklearn.base import is_classifier
    from sklearn.metrics import accuracy_score, r2_score

    if scoring == "accuracy" or (scoring is None and is_classifier(model)):
        return accuracy_score
    return r2_score


def _stack(X, columns: list[int], perms: list[np.ndarray]):
    """One block of X per (column, permutation) pair, that column's rows permuted."""
    n, blocks = len(X), len(columns) * len(perms)
    if isinstance(X, pd.DataFrame):
        out = {}
        for j in range(X.shape[1]):
            col = X.iloc[:, j]
            values = np.tile(col.to_numpy(), blocks)
            if j in columns:
                b = columns.index(j) * len(perms)
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

    Returns ``{"mean", "std", "rows", "budgeted", "predict_calls"}``; ``rows`` < len(X) when
    the time budget cut the rows."""
    y = np.asarray(y)
    metric = _metric(model, scoring)
    n, width = len(X), X.shape[1]
    t0 = time.perf_counter()
    base = metric(y, model.predict(X))
    t_all = time.perf_counter() - t0
    rows, budgeted, calls = n, False, 1
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
        affordable = int((seconds - fixed) / (per_row * width * n_repeats))
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
    if isinstance(X, pd.DataFrame):
        row_bytes = max(1.0, X.memory_usage(index=False).sum() / max(rows, 1))
    else:
        row_bytes = X.itemsize * width
    per_chunk = max(1, int(CHUNK_BYTES // (row_bytes * rows * n_repeats)))
    drops = np.zeros((width, n_repeats))
    for start in range(0, width, per_chunk):
        cols = list(range(start, min(width, start + per_chunk)))
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
    }
