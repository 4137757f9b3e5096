"""Built-in check ``loads``: the model loads and predicts in a clean process."""

from __future__ import annotations

from ..plugins import CheckContext, CheckResult


def detect_flavor(model) -> str:
    root = type(model).__module__.split(".")[0]
    return {"sklearn": "sklearn", "xgboost": "xgboost", "lightgbm": "lightgbm"}.get(root, root)


def detect_task(model) -> str | None:
    kind = getattr(model, "_estimator_type", None)
    if kind is None:
        tags = getattr(model, "__sklearn_tags__", None)
        kind = getattr(tags(), "estimator_type", None) if tags else None
    if kind == "classifier":
        return "classification"
    if kind == "regressor":
        return "regression"
    return "classification" if hasattr(model, "predict_proba") else None


class LoadsCheck:
    name = "loads"
    title = "Loads and predicts in a clean process"
    needs = ()
    compares_champion = False
    defaults = {"sample_rows": 5}

    def run(self, ctx: CheckContext, **kwargs) -> CheckResult:
        model = ctx.model
        metrics = {"flavor": detect_flavor(model), "task": detect_task(model)}
        if not callable(getattr(model, "predict", None)):
            return CheckResult("fail", f"{type(model).__name__} has no predict method.", metrics)
        if ctx.X is None:
            return CheckResult(
                "pass", "Loads in a clean process (no data pushed to predict).", metrics
            )
        rows = {**self.defaults, **(ctx.config or {}), **kwargs}["sample_rows"]
        sample = ctx.X.iloc[:rows]
        try:
            out = model.predict(ctx.as_input(sample))
        except Exception as e:
            return CheckResult(
                "fail",
                f"Loads, but predict raised {type(e).__name__}: {e}",
                metrics,
            )
        import numpy as np

        n = np.shape(out)[0] if np.ndim(out) else None
        if n != len(sample):
            got = "a scalar" if n is None else f"{n} predictions"
            return CheckResult(
                "fail",
                f"predict returned {got} for {len(sample)} rows; expected one per row.",
                metrics,
            )
        return CheckResult("pass", "Loads and predicts in a clean process.", metrics)
