"""Helpers shared by the built-in checks: settings, task detection, JSON safety, PNGs.

Only ever imported in a worker subprocess (or in tests), never in the agent.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

from ..check_settings import coerce
from ..plugins import CheckContext, CheckResult
from .loads import detect_task as _detect_model_task


def settings(check, ctx: CheckContext, kwargs: dict) -> dict:
    """The check's defaults, overridden by ``ctx.config``, overridden by ``run`` kwargs.

    Overrides typed on a command line arrive as strings ("0.2", "false"); they are converted
    to the type of the default (or to a number when the default is ``None``).
    """
    defaults = getattr(check, "defaults", {})
    merged = {**defaults, **(ctx.config or {}), **kwargs}
    return {k: coerce(v, defaults.get(k)) for k, v in merged.items()}


def missing(check, ctx: CheckContext) -> CheckResult | None:
    """A ``skip`` result when a field the check needs is absent, else ``None``."""
    absent = [n for n in check.needs if getattr(ctx, n, None) is None]
    if absent:
        return CheckResult("skip", f"Skipped: no {', '.join(absent)} was given.")
    return None


def detect_task(ctx: CheckContext, model=None) -> str | None:
    """``ctx.task`` if set, else from the model's estimator type, else from the target."""
    if ctx.task in ("classification", "regression"):
        return ctx.task
    task = _detect_model_task(model if model is not None else ctx.model)
    if task is None and ctx.y is not None:
        y = np.asarray(ctx.y)
        few = len(np.unique(y)) <= max(20, int(0.05 * len(y)))
        task = "classification" if y.dtype.kind in "OUSb" or few else "regression"
    return task


def jsonable(value: Any) -> Any:
    """``value`` with numpy and pandas scalars made plain; NaN and inf become ``None``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "item"):  # other numpy scalars
        return jsonable(value.item())
    return str(value)


def result(status: str, message: str, metrics=None, tables=None, plots=None) -> CheckResult:
    """A ``CheckResult`` whose metrics and tables are JSON-safe."""
    return CheckResult(
        status,
        message,
        jsonable(metrics or {}),
        jsonable(tables or {}),
        dict(plots or {}),
    )


def worst(statuses) -> str:
    """The most severe of some statuses (``pass`` when there are none)."""
    order = ("pass", "skip", "warn", "fail", "error")
    return max(statuses, key=order.index, default="pass")


def call(fn, *args, what: str = "predict", **kwargs):
    """Call ``fn``; on exception return ``(None, message)`` instead of raising."""
    try:
        return fn(*args, **kwargs), None
    except Exception as e:
        return None, f"{what} raised {type(e).__name__}: {e}"


def subsample(X, y=None, rows: int = 1000, seed: int = 0, extra=None):
    """At most ``rows`` rows of X (and y, and ``extra``), drawn without replacement."""
    n = len(X)
    if n <= rows:
        return X, y, extra
    idx = np.sort(np.random.default_rng(seed).choice(n, rows, replace=False))
    return tuple(None if d is None else d.iloc[idx] for d in (X, y, extra))


def take_rows(data, rows):
    """Rows of a frame or Series by position (``.iloc``), or of an array: ``rows`` is an
    index array or a slice."""
    return data.iloc[rows] if hasattr(data, "iloc") else data[rows]


def columns(X) -> list[str]:
    """The feature names of ``X``: a DataFrame's columns, a text Series' one name."""
    if getattr(X, "ndim", 2) == 1:
        return [str(getattr(X, "name", None) or "text")]
    return [str(c) for c in X.columns]


def rows_mismatch(out, n: int, what: str = "predict") -> str | None:
    """A message when ``out`` does not hold one prediction per row of ``n``, else ``None``."""
    shape = np.shape(out)
    if not shape:
        return f"{what} returned a scalar for {n} rows; expected {n} predictions."
    if shape[0] != n:
        return f"{what} returned {shape[0]} predictions for {n} rows; expected one per row."
    return None


def png(fig) -> str:
    """A matplotlib figure as a base64 PNG; closes the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    finally:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figure(width: float = 4.0, height: float = 2.6):
    """A new figure and axes on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
