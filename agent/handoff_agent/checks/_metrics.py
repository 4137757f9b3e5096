"""Task metrics with vectorised bootstrap confidence intervals.

Point estimates come from sklearn. The bootstrap draws one matrix of resampling weights and
evaluates every replicate at once with numpy, so 200 replicates cost about as much as a few
sklearn calls. The same weights serve candidate and champion, so deltas are paired.
"""

from __future__ import annotations

import numpy as np

from ..vocabulary import HIGHER_IS_BETTER  # noqa: F401  (metric directions, defined once)

EPS = float(np.finfo(np.float64).eps)  # what sklearn.metrics.log_loss clips to


def weights(n: int, replicates: int, seed: int) -> np.ndarray:
    """Bootstrap resampling counts, one row per replicate."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(replicates, n)) + (np.arange(replicates) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=replicates * n).reshape(replicates, n) * 1.0


def _wmean(W, v):
    return (W @ v) / W.sum(axis=1)


def _auc(W, score, positive):
    """Weighted binary ROC AUC for each row of W (ties count half)."""
    order = np.argsort(score, kind="mergesort")
    s, pos = score[order], positive[order].astype(float)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    Wo = W[:, order]
    p = np.add.reduceat(Wo * pos, starts, axis=1)
    q = np.add.reduceat(Wo, starts, axis=1) - p
    below = np.cumsum(q, axis=1) - q
    denom = p.sum(axis=1) * q.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (p * (below + 0.5 * q)).sum(axis=1) / denom, np.nan)


def _f1(W, y, pred, labels):
    """Weighted F1 (binary for two labels, else macro) for each row of W."""
    if len(labels) == 2:
        labels = labels[1:]
    scores = []
    for k in labels:
        tp = W @ ((pred == k) & (y == k))
        fp = W @ ((pred == k) & (y != k))
        fn = W @ ((pred != k) & (y == k))
        with np.errstate(invalid="ignore", divide="ignore"):
            scores.append(np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0))
    return np.mean(scores, axis=0)


def classification(W, y, pred, proba, classes) -> dict[str, np.ndarray]:
    """Each metric for each bootstrap replicate (a row of W; a row of ones is the sample)."""
    y, pred = np.asarray(y), np.asarray(pred)
    labels = np.unique(y)
    out = {"accuracy": _wmean(W, (y == pred).astype(float)), "f1": _f1(W, y, pred, labels)}
    if proba is not None and classes is not None:
        index = {c: i for i, c in enumerate(classes.tolist())}
        col = np.array([index.get(v, -1) for v in y.tolist()])
        if (col >= 0).all():
            p_true = np.clip(proba[np.arange(len(y)), col], EPS, 1.0)
            out["log_loss"] = _wmean(W, -np.log(p_true))
            if len(classes) == 2:
                out["roc_auc"] = _auc(W, proba[:, 1], col == 1)
            elif len(labels) > 2:
                out["roc_auc"] = np.nanmean(
                    [_auc(W, proba[:, index[k]], y == k) for k in labels], axis=0
                )
    return out


def regression(W, y, pred) -> dict[str, np.ndarray]:
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float).reshape(len(y))
    err = y - pred
    total = W.sum(axis=1)
    mean_y = (W @ y) / total
    ss_res = W @ (err**2)
    ss_tot = (W @ y**2) - total * mean_y**2
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.nan)
    return {"r2": r2, "mae": _wmean(W, np.abs(err)), "rmse": np.sqrt(ss_res / total)}


def point_estimates(task, y, pred, proba, classes) -> dict[str, float]:
    """The sklearn metrics on the whole sample (the numbers people compare with elsewhere)."""
    from sklearn import metrics as m

    y = np.asarray(y)
    if task == "regression":
        pred = np.asarray(pred, dtype=float).reshape(len(y))
        return {
            "r2": m.r2_score(y, pred),
            "mae": m.mean_absolute_error(y, pred),
            "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
        }
    labels = np.unique(y)
    binary = len(labels) == 2
    out = {
        "accuracy": m.accuracy_score(y, pred),
        "f1": m.f1_score(y, pred, pos_label=labels[-1])
        if binary
        else m.f1_score(y, pred, average="macro", labels=labels),
    }
    if proba is not None and classes is not None and set(labels) <= set(classes.tolist()):
        out["log_loss"] = m.log_loss(y, proba, labels=classes)
        if len(classes) == 2 and binary:
            out["roc_auc"] = m.roc_auc_score(y == classes[1], proba[:, 1])
        elif len(labels) > 2:
            idx = [classes.tolist().index(k) for k in labels]
            p = proba[:, idx] / proba[:, idx].sum(axis=1, keepdims=True)
            out["roc_auc"] = m.roc_auc_score(y, p, multi_class="ovr", labels=labels)
    return {k: float(v) for k, v in out.items()}
