"""Built-in check ``fairness``: metrics per group of each sensitive column (fairlearn).

Binary classification: selection rate, accuracy, TPR and FPR per group, with the demographic
parity difference and the equalized odds difference. Multiclass: accuracy per group.
Regression: MAE and RMSE per group, and the ratio of the worst group's MAE to the best's.
Groups smaller than ``min_group_size`` are reported but left out of the differences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..plugins import CheckContext, CheckResult
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
    worst,
)


def _rmse(y_true, y_pred) -> float:
    from sklearn.metrics import mean_squared_error

    return float(np.sqrt(mean_squared_error(y_true, y_pred)))


def _frame(task, binary, y, pred, groups):
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score, mean_absolute_error

    if task == "regression":
        metrics = {"count": count, "mae": mean_absolute_error, "rmse": _rmse}
    elif binary:
        metrics = {
            "count": count,
            "selection_rate": selection_rate,
            "accuracy": accuracy_score,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
        }
    else:
        metrics = {"count": count, "accuracy": accuracy_score}
    return MetricFrame(metrics=metrics, y_true=y, y_pred=pred, sensitive_features=groups)


def _spread(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.max() - values.min()) if len(values) > 1 else None


def _limits(task, binary, judged: pd.DataFrame, cfg) -> list[tuple[str, float | None, float]]:
    """(measure, value, threshold) for the groups large enough to judge."""
    if task == "regression":
        mae = judged["mae"].dropna()
        ratio = float(mae.max() / mae.min()) if len(mae) > 1 and mae.min() > 0 else None
        if len(mae) > 1 and mae.min() == 0 < mae.max():
            ratio = float("inf")
        return [("mae_ratio", ratio, cfg["max_error_ratio"])]
    if not binary:
        return [("accuracy_diff", _spread(judged["accuracy"]), cfg["max_accuracy_diff"])]
    tpr, fpr = _spread(judged["tpr"]), _spread(judged["fpr"])
    eo = None if tpr is None and fpr is None else max(v for v in (tpr, fpr) if v is not None)
    return [
        ("dp_diff", _spread(judged["selection_rate"]), cfg["max_dp_diff"]),
        ("eo_diff", eo, cfg["max_eo_diff"]),
    ]


class FairnessCheck:
    name = "fairness"
    title = "Treats the groups of each sensitive column alike"
    needs = ("X", "y", "sensitive")
    compares_champion = False
    defaults = {
        "max_dp_diff": 0.1,  # demographic parity difference (binary classification)
        "max_eo_diff": 0.1,  # equalized odds difference (binary classification)
        "max_accuracy_diff": 0.1,  # accuracy spread across groups (multiclass)
        "max_error_ratio": 1.5,  # worst group's MAE over the best group's (regression)
        "min_group_size": 30,
        "plots": True,
    }

    def run(self, ctx: CheckContext, **kwargs) -> CheckResult:
        skip = missing(self, ctx)
        if skip:
            return skip
        cfg = settings(self, ctx, kwargs)
        task = detect_task(ctx)
        pred, err = call(ctx.model.predict, row_major(ctx.model, ctx.as_input(ctx.X)))
        if err:
            return result("fail", err)
        wrong = rows_mismatch(pred, len(ctx.X))
        if wrong:
            return result("fail", wrong)
        y, pred = np.asarray(ctx.y), np.asarray(pred).reshape(len(ctx.y))
        binary = False
        if task != "regression":
            labels = np.unique(np.concatenate([np.unique(y), np.unique(pred)]).astype(y.dtype))
            binary = len(labels) <= 2
            if binary:  # the larger label is the positive, "selected" outcome
                y, pred = (y == labels[-1]).astype(int), (pred == labels[-1]).astype(int)
        sensitive = ctx.sensitive
        if isinstance(sensitive, pd.Series):
            sensitive = sensitive.to_frame()
        metrics, rows, statuses, notes, plots = {"task": task}, [], [], [], {}
        for col in sensitive.columns:
            groups = sensitive[col].astype("object").where(sensitive[col].notna(), "(missing)")
            groups = groups.astype(str).to_numpy()
            by = _frame(task, binary, y, pred, groups).by_group
            by["count"] = by["count"].astype(int)
            small = by[by["count"] < cfg["min_group_size"]]
            judged = by[by["count"] >= cfg["min_group_size"]]
            for group, r in by.iterrows():
                rows.append({"sensitive": str(col), "group": str(group), **r.to_dict()})
            if len(judged) < 2:
                statuses.append("warn")
                numbers = pd.api.types.is_numeric_dtype(sensitive[col])
                looks_continuous = numbers and len(by) > max(20, len(groups) // 10)
                notes.append(
                    f"{col!s}: {len(by)} distinct values, a number per row rather than groups: "
                    "bin it (e.g. pd.cut into age bands) to judge fairness."
                    if looks_continuous
                    else f"{col!s}: fewer than two groups have {cfg['min_group_size']} rows, "
                    "so fairness cannot be judged."
                )
                continue
            if len(small):
                statuses.append("warn")
                names = ", ".join(map(str, small.index[:5]))
                notes.append(f"{col!s}: group(s) {names} too small to judge.")
            for measure, value, limit in _limits(task, binary, judged, cfg):
                metrics[f"{col}.{measure}"] = value
                if value is not None:
                    metrics[measure] = max(metrics.get(measure, value), value)
                if value is not None and value > limit:
                    statuses.append("fail")
                    notes.insert(0, f"{col!s}: {measure} is {value:.3f}, over {limit}.")
            if cfg["plots"]:
                plots[f"by_group_{col}"] = self._plot(col, by, task, binary)
        status = worst(statuses)
        if status == "pass":
            judged = ", ".join(f"{k} {fmt(v)}" for k, v in metrics.items() if "." in k)
            notes.append(f"Within thresholds: {judged}.")
        return result(status, " ".join(notes), metrics, {"groups": rows}, plots)

    def _plot(self, col, by, task, binary) -> str:
        measure = "mae" if task == "regression" else "selection_rate" if binary else "accuracy"
        fig, ax = figure(3.6, 0.6 + 0.3 * min(len(by), 20))
        top = by.head(20)
        ax.barh([str(g) for g in top.index], top[measure].astype(float))
        ax.set(xlabel=measure, title=f"{measure} by {col}")
        return png(fig)
