"""Built-in check ``performance``: task metrics with bootstrap CIs, compared with the champion.

Classification: accuracy, F1, ROC AUC, log loss. Regression: R², MAE, RMSE. When a champion is
given, both models are scored on the same rows with the same bootstrap draws, and the check
fails when the primary metric drops by more than ``max_regression`` (absolute).
"""

from __future__ import annotations

import numpy as np

from ..argmax_predict import argmax_classes, argmax_predictions, ties_go_by_argmax
from ..plugins import CheckContext, CheckResult
from ..vocabulary import rows_text
from . import _metrics
from ._layout import row_major
from ._util import (
    call,
    detect_task,
    figure,
    fmt,
    missing,
    png,
    result,
    rows_mismatch,
    settings,
    take_rows,
    worst,
)
from .loads import detect_task as model_task

CHUNK_CELLS = 2_000_000  # bootstrap weights held at once, to bound memory on large samples


def _outputs(model, X, task):
    X = row_major(model, X)
    proba = classes = None
    if task == "classification" and callable(getattr(model, "predict_proba", None)):
        proba, perr = call(model.predict_proba, X, what="predict_proba")
        classes = getattr(model, "classes_", None)
        if perr or classes is None:
            proba = classes = None
        else:
            proba, classes = np.asarray(proba, dtype=float), np.asarray(classes)
            if proba.ndim != 2 or proba.shape != (len(X), len(classes)):
                proba = classes = None
    pred, err = _predictions(model, X, proba)
    if err:
        return None, err
    wrong = rows_mismatch(pred, len(X))
    if wrong:
        return None, wrong
    return (np.asarray(pred), proba, classes), None


def _predictions(model, X, proba):
    """The model's predictions: from its probabilities where its ``predict`` is their argmax
    (``argmax_predict``), asking ``predict`` only for the rows those cannot settle; else
    ``predict`` on every row."""
    known = argmax_classes(model) if proba is not None else None
    ties = known is not None and ties_go_by_argmax(model)
    got = argmax_predictions(proba, known, ties) if known is not None else None
    if got is None:
        return call(model.predict, X)
    pred, unsure = got
    if unsure.any():
        rows = np.flatnonzero(unsure)
        some, err = call(model.predict, take_rows(X, rows))
        if err:
            return None, err
        pred[rows] = np.asarray(some).reshape(len(rows))
    return pred, None


def _replicates(task, y, outs, replicates, seed) -> list[dict[str, np.ndarray]]:
    """Every metric for every bootstrap replicate, for each model's outputs in ``outs``.

    The models share the same draws (so deltas are paired), made in chunks of bounded size.
    """
    n = len(y)
    per_chunk = max(1, CHUNK_CELLS // max(n, 1))
    parts: list[dict[str, list]] = [{} for _ in outs]
    for i, start in enumerate(range(0, replicates, per_chunk)):
        W = _metrics.weights(n, min(per_chunk, replicates - start), seed + i)
        for out, part in zip(outs, parts, strict=True):
            if task == "regression":
                got = _metrics.regression(W, y, out[0])
            else:
                got = _metrics.classification(W, y, *out)
            for k, v in got.items():
                part.setdefault(k, []).append(v)
    return [{k: np.concatenate(v) for k, v in part.items()} for part in parts]


def _ci(values: np.ndarray, level: float) -> list:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return [None, None]
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


class PerformanceCheck:
    name = "performance"
    title = "Task metrics with confidence intervals, compared with the champion"
    needs = ("X", "y")
    compares_champion = True
    defaults = {
        "primary_metric": None,  # None: roc_auc (else accuracy) or r2
        "max_regression": 0.01,  # fail when the primary metric drops more than this
        "min_score": None,  # fail when the primary metric is below this, champion or not
        "min_rows": 20,  # warn below this: a CI of a handful of rows judges nothing
        "bootstrap": 200,
        "confidence": 0.95,
        "random_state": 0,
        "plots": True,
    }

    def run(self, ctx: CheckContext, **kwargs) -> CheckResult:
        skip = missing(self, ctx)
        if skip:
            return skip
        cfg = settings(self, ctx, kwargs)
        task = detect_task(ctx)
        if task is None:
            return result("skip", "Skipped: cannot tell whether this is classification.")
        y = np.asarray(ctx.y)
        out, err = _outputs(ctx.model, ctx.as_input(ctx.X), task)
        if err:
            return result("fail", err, {"task": task})
        point = _metrics.point_estimates(task, y, *out)
        primary = cfg["primary_metric"] or (
            "r2" if task == "regression" else "roc_auc" if "roc_auc" in point else "accuracy"
        )
        if primary not in point:
            return result("error", f"Unknown or unavailable primary metric {primary!r}.")
        status, notes = "pass", []
        champ_out, champion, unlike = None, ctx.champion, None
        if champion is not None and (other := model_task(champion)) not in (None, task):
            # an r2 beside an accuracy means nothing
            status, champion, unlike = (
                "warn",
                None,
                f"the champion is a {other} model, this one {task}",
            )
        if champion is not None:
            champ_out, cerr = _outputs(champion, ctx.as_input(ctx.X), task)
            if cerr:
                status = "warn"
                notes.append(f"Could not score the champion: {cerr}.")
        outs = [out] if champ_out is None else [out, champ_out]
        boot, *cboot = _replicates(task, y, outs, cfg["bootstrap"], cfg["random_state"])
        metrics = {"task": task, "rows": len(y), "primary_metric": primary}
        rows = []
        for k, v in point.items():
            metrics[k] = v
            metrics[f"{k}_ci"] = _ci(boot[k], cfg["confidence"]) if k in boot else [None, None]
            rows.append({"metric": k, "value": v, "ci": metrics[f"{k}_ci"]})

        if champ_out is not None:
            cstatus, note = self._compare(
                cfg, task, y, primary, point, boot, cboot[0], champ_out, rows
            )
            status = worst([status, cstatus])
            notes.insert(0, note)
            metrics.update({f"champion_{r['metric']}": r.get("champion") for r in rows})
            metrics.update({f"delta_{r['metric']}": r.get("delta") for r in rows})
        if cfg["min_score"] is not None and not _ok(primary, point[primary], cfg["min_score"]):
            status = "fail"
            notes.append(f"{primary} is {fmt(point[primary])}, short of {cfg['min_score']}.")
        if not notes:
            lo, hi = metrics[f"{primary}_ci"]
            notes.append(
                f"{primary} = {fmt(point[primary])} ({cfg['confidence']:.0%} CI {fmt(lo)} to "
                f"{fmt(hi)}) on {rows_text(len(y))}; "
                + (
                    f"not compared with the champion: {unlike}. A different task is usually "
                    "a different model: push it under its own name."
                    if unlike
                    else "no champion to compare with."
                )
            )
        if len(y) < cfg["min_rows"]:
            status = worst([status, "warn"])
            notes.append(
                f"Only {rows_text(len(y))}: too few to judge a model by (min_rows "
                f"{cfg['min_rows']}); push more evaluation rows with --data."
            )
        plots = self._plots(task, y, out, champ_out) if cfg["plots"] else {}
        return result(status, " ".join(notes), metrics, {"metrics": rows}, plots)

    def _compare(self, cfg, task, y, primary, point, boot, cboot, champ_out, rows):
        champ = _metrics.point_estimates(task, y, *champ_out)
        for r in rows:
            k = r["metric"]
            if k in champ:
                r["champion"] = champ[k]
                r["delta"] = r["value"] - champ[k]
                if k in cboot and k in boot:
                    r["delta_ci"] = _ci(boot[k] - cboot[k], cfg["confidence"])
        if primary not in champ:
            return "warn", f"The champion has no {primary} to compare with."
        delta = point[primary] - champ[primary]
        better = _metrics.HIGHER_IS_BETTER[primary]
        drop = -delta if better else delta
        row = next(r for r in rows if r["metric"] == primary)
        lo, hi = row.get("delta_ci", [None, None])
        level = f"{cfg['confidence']:.0%}"
        ci = f" ({level} CI of the delta {fmt(lo)} to {fmt(hi)})" if lo is not None else ""
        change = (
            f"{primary} {'fell' if drop > 0 else 'rose' if drop < 0 else 'held'} from "
            f"{fmt(champ[primary])} (champion) to {fmt(point[primary])}: "
            f"delta {delta:+.3f}{ci}"
        )
        if drop > cfg["max_regression"]:
            return "fail", (
                f"Worse than the champion: {change}, beyond the allowed regression of "
                f"{cfg['max_regression']}."
            )
        significant = lo is not None and (hi < 0 if better else lo > 0)
        if drop > 0 and significant:
            return "warn", f"Slightly worse than the champion: {change}, within the threshold."
        return "pass", f"Compared with the champion: {change}."

    def _plots(self, task, y, out, champ_out) -> dict[str, str]:
        if task == "regression":
            fig, ax = figure(3.6, 3.2)
            pred = np.asarray(out[0], dtype=float).reshape(len(y))
            ax.scatter(y, pred, s=6, alpha=0.5)
            lims = [
                float(np.nanmin([y.min(), pred.min()])),
                float(np.nanmax([y.max(), pred.max()])),
            ]
            ax.plot(lims, lims, color="grey", lw=1)
            ax.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual")
            return {"predicted_vs_actual": png(fig)}
        if out[1] is None or len(out[2]) != 2:
            return {}
        from sklearn.metrics import roc_curve

        fig, ax = figure(3.6, 3.2)
        for label, o in (("candidate", out), ("champion", champ_out)):
            if o is not None and o[1] is not None and len(o[2]) == 2:
                fpr, tpr, _ = roc_curve(y == o[2][1], o[1][:, 1])
                ax.plot(fpr, tpr, label=label)
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
        ax.legend(loc="lower right")
        return {"roc_curve": png(fig)}


def _ok(metric: str, value: float, bound: float) -> bool:
    return value >= bound if _metrics.HIGHER_IS_BETTER[metric] else value <= bound
