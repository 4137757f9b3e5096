"""Built-in check ``explainability``: permutation importance and partial dependence.

Both are budgeted: permutation importance runs on at most ``max_rows`` rows with ``n_repeats``
repeats (the full 5,000 rows with 5 repeats of a 200-tree forest takes about 16 s), and partial
dependence on ``pdp_rows`` rows over a grid of ``grid_resolution`` points, for the
``top_features`` most important features.

Permutation importance stacks every permuted copy into one predict call, and uses fewer rows
when those would take over ``seconds`` (``_permutation.py``; of wide data, only the 50 columns
a quick screen picks, which the message states), for models scored by accuracy or R² of
their own predict (sklearn's estimators and pipelines, and any model without a ``score``).
Those with a score of their own, and text, are scored one call per feature and shuffle, in
rounds over the features until ``seconds`` are spent (``scored_importance``): a slow score
leaves fewer shuffles, or features not ranked, which the message states. Partial dependence
likewise stacks a feature's grid into one
predict call for those models (``_dependence.py``), unless sklearn would read the trees
instead (its recursion method: gradient boosting, regression trees and forests).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..plugins import CheckContext, CheckResult
from ..vocabulary import rows_text
from ._dependence import handled
from ._dependence import partial_dependence as stacked_dependence
from ._permutation import permutation_importance as stacked_importance
from ._permutation import scored_importance, stackable
from ._util import call, columns, detect_task, figure, missing, png, result, settings, subsample


def _importance(model, X, y, task, cfg, kind="table") -> tuple[list[dict], int, dict]:
    """Rows of (feature, importance, std), most important first, the rows it used, and what
    the budget cut: ``screened`` when wide data left only some columns to rank
    (``_screened``), ``scored`` when a score of the model's own ran out of time
    (``_scored_cut``)."""
    scoring = None  # the model's own score(): accuracy or R² for sklearn estimators
    if not callable(getattr(model, "score", None)):
        scoring = "accuracy" if task == "classification" else "r2"
    data = X.to_numpy() if kind == "array" else X
    if kind != "text" and stackable(model):
        r = stacked_importance(
            model,
            data,
            y,
            n_repeats=cfg["n_repeats"],
            seconds=cfg["seconds"] or None,
            min_rows=cfg["min_rows"],
            scoring=scoring,
            random_state=cfg["random_state"],
        )
        cut = {"screened": _screened(r, X, cfg), "budgeted": r["budgeted"]}
        return _ranking(r, columns(X)), r["rows"], cut
    r = scored_importance(
        _scorer(model, scoring),
        data,
        y,
        n_repeats=cfg["n_repeats"],
        seconds=cfg["seconds"] or None,
        random_state=cfg["random_state"],
    )
    cut = {"scored": _scored_cut(r, cfg), "budgeted": r["budgeted"]}
    if scoring is None and not stackable(model):
        cut["metric"] = "its own score"  # not accuracy or R², whatever its task
    return _ranking(r, columns(X)), len(X), cut


def _scorer(model, scoring):
    """``score(X, y)``: the model's own, else sklearn's scorer of ``scoring``."""
    if scoring is None:
        return model.score
    from sklearn.metrics import get_scorer

    scorer = get_scorer(scoring)
    return lambda A, b: scorer(model, A, b)


def _ranking(r: dict, names: list[str]) -> list[dict]:
    rows = [
        {"feature": names[j], "importance": float(r["mean"][j]), "std": float(r["std"][j])}
        for j in r["columns"]
    ]
    return sorted(rows, key=lambda row: -row["importance"])


def _screened(r: dict, X, cfg) -> dict | None:
    """What the user is told was sampled when wide data was screened, else None."""
    if r["screen_rows"] is None:
        return None
    return {"columns": X.shape[1], "ranked": len(r["columns"]), "screen_rows": r["screen_rows"]}


def _screen_note(screen: dict, seconds) -> str:
    return (
        f"{screen['columns']:,} columns are too many to rank by permutation within the "
        f"{seconds:g} s budget: ranked the {screen['ranked']} whose shuffling (once, on "
        f"{screen['screen_rows']} rows) moved the model's predictions most; the other "
        f"{screen['columns'] - screen['ranked']:,} were not ranked."
    )


def _scored_cut(r: dict, cfg) -> dict | None:
    """What the budget cut of a score of the model's own, else None: the features ranked
    of all, and the fewest and most shuffles of a ranked one."""
    if not r["budgeted"]:
        return None
    done = [n for n in r["repeats"] if n]
    return {
        "features": len(r["repeats"]),
        "ranked": len(done),
        "repeats": [min(done), max(done)],
        "n_repeats": cfg["n_repeats"],
    }


def _scored_note(cut: dict, seconds) -> str:
    low, high = cut["repeats"]
    shuffles = f"{low}" if low == high else f"{low} to {high}"
    said = (
        f"The model's own score ran out of the {seconds:g} s budget: ranked "
        f"{cut['ranked']} of {cut['features']} features, by {shuffles} of "
        f"{cut['n_repeats']} shuffles each"
    )
    left = cut["features"] - cut["ranked"]
    return said + (f"; the other {left} were not ranked." if left else ".")


def _dependence(model, X, feature, cfg, kind="table"):
    from sklearn.inspection import partial_dependence

    categorical = not pd.api.types.is_numeric_dtype(X[feature]) or X[feature].nunique() <= 2
    j = list(X.columns).index(feature)
    data = X.to_numpy() if kind == "array" else X
    if handled(model, data, j, categorical):
        got = stacked_dependence(
            model, data, j, categorical=categorical, grid_resolution=cfg["grid_resolution"]
        )
        return got["grid_values"][0], got["average"], categorical
    key = j if kind == "array" else feature
    pd_result = partial_dependence(
        model,
        data if categorical else _floated(data, key),
        [key],
        categorical_features=[key] if categorical else None,
        grid_resolution=cfg["grid_resolution"],
        kind="average",
    )
    return pd_result["grid_values"][0], np.asarray(pd_result["average"]), categorical


def _floated(data, key):
    """``data`` with an integer column ``key`` as floats, which sklearn's partial dependence
    needs (1.9 refuses integers); the models it gets (recursion through trees, or a model
    whose rows may not be stacked) take floats where they take integers."""
    if isinstance(data, pd.DataFrame):
        if data[key].dtype.kind in "iu":
            return data.astype({key: "float64"})
        return data
    return data.astype("float64") if data.dtype.kind in "iu" else data


def _plot(feature, grid, average, categorical, classes) -> str:
    fig, ax = figure(3.4, 2.4)
    labels = [str(c) for c in classes] if classes is not None and len(average) > 1 else None
    for i, curve in enumerate(average):
        label = labels[i] if labels else None
        if categorical:
            ax.plot([str(g) for g in grid], curve, marker="o", label=label)
        else:
            ax.plot(grid, curve, label=label)
    ax.set(xlabel=str(feature), ylabel="partial dependence", title=f"Partial dependence: {feature}")
    if labels:
        ax.legend(fontsize="small")
    return png(fig)


class ExplainabilityCheck:
    name = "explainability"
    title = "What drives the model: permutation importance and partial dependence"
    needs = ("X", "y")
    compares_champion = False
    defaults = {
        "max_rows": 1000,  # rows for permutation importance
        "n_repeats": 3,
        "seconds": 5.0,  # permutation importance's budget; fewer rows (min_rows) beyond it
        "min_rows": 500,
        "top_features": 3,  # partial dependence plots for this many features
        "pdp_rows": 300,
        "grid_resolution": 20,
        "random_state": 0,
        "plots": True,
    }

    def run(self, ctx: CheckContext, **kwargs) -> CheckResult:
        skip = missing(self, ctx)
        if skip:
            return skip
        cfg = settings(self, ctx, kwargs)
        task = detect_task(ctx)
        X, y, _ = subsample(ctx.X, ctx.y, cfg["max_rows"], cfg["random_state"])
        kind = ctx.input_kind
        got, err = call(
            _importance, ctx.model, X, y, task, cfg, kind, what="permutation importance"
        )
        if err:
            return result("warn", f"Could not explain the model: {err}")
        rows, used, cut = got
        metrics = {
            "rows": used,
            "n_repeats": cfg["n_repeats"],
            "budgeted": cut["budgeted"],
            "importance": {r["feature"]: r["importance"] for r in rows},
            "top_features": [r["feature"] for r in rows[: cfg["top_features"]]],
        }
        plots, notes = {}, []
        if cut.get("screened"):
            metrics["screened"] = cut["screened"]
            notes.append(_screen_note(cut["screened"], cfg["seconds"]))
        if cut.get("scored"):
            metrics["scored"] = cut["scored"]
            notes.append(_scored_note(cut["scored"], cfg["seconds"]))
        if kind == "text":
            notes.append("No partial dependence: the input is text, not separate features.")
        elif cfg["plots"] and cfg["top_features"] > 0:
            small, _, _ = subsample(X, None, cfg["pdp_rows"], cfg["random_state"])
            classes = getattr(ctx.model, "classes_", None)
            for r in rows[: cfg["top_features"]]:
                feature = next(c for c in X.columns if str(c) == r["feature"])
                got, perr = call(
                    _dependence, ctx.model, small, feature, cfg, kind, what="partial dependence"
                )
                if perr:
                    notes.append(f"No partial dependence for {feature!s}: {perr}")
                    continue
                plots[f"pdp_{r['feature']}"] = _plot(feature, *got, classes)
        top = ", ".join(f"{r['feature']} ({r['importance']:.3f})" for r in rows[:3])
        score = cut.get("metric") or (
            "accuracy" if task == "classification" else "R²" if task == "regression" else "score"
        )
        message = f"Most important by permutation on {rows_text(used)} (drop in {score}): {top}."
        scored = cut.get("scored")
        unranked = scored is not None and scored["ranked"] < scored["features"]
        if rows and all(r["importance"] <= 0 for r in rows) and not unranked:
            return result(
                "warn",
                "No feature matters: shuffling any one of them does not hurt the score. "
                "The model may ignore its inputs.",
                metrics,
                {"importance": rows},
                plots,
            )
        return result("pass", " ".join([message, *notes]), metrics, {"importance": rows}, plots)
