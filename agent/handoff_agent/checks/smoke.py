"""Built-in check ``smoke``: predictions have the right shape and dtype, are finite and stable."""

from __future__ import annotations

import numpy as np

from ..plugins import CheckContext, CheckResult
from ..vocabulary import rows_text
from ._util import call, detect_task, missing, result, rows_mismatch, settings


def _problems(out, n: int, task: str | None, what: str) -> list[str]:
    out = np.asarray(out)
    found = []
    wrong = rows_mismatch(out, n, what)
    if wrong:
        return [wrong]
    if what == "predict" and out.ndim > 1 and not (out.ndim == 2 and out.shape[1] == 1):
        found.append(f"{what} returned shape {out.shape}; expected ({n},) for one target.")
    if task == "regression" and out.dtype.kind not in "biuf":
        found.append(f"{what} returned dtype {out.dtype}; a regressor should return numbers.")
    if out.dtype.kind in "fc":
        bad = int((~np.isfinite(out)).sum())
        if bad:
            found.append(f"{what} returned {bad} NaN or infinite value(s) for {n} rows.")
    elif out.dtype.kind == "O":
        nulls = sum(v is None or (isinstance(v, float) and not np.isfinite(v)) for v in out.flat)
        if nulls:
            found.append(f"{what} returned {nulls} missing value(s) (None or NaN) for {n} rows.")
    return found


class SmokeCheck:
    name = "smoke"
    title = "Predicts with the right shape, finite values and deterministic output"
    needs = ("X",)
    compares_champion = False
    defaults = {"sample_rows": 200, "proba_tolerance": 1e-6, "check_determinism": True}

    def run(self, ctx: CheckContext, **kwargs) -> CheckResult:
        skip = missing(self, ctx)
        if skip:
            return skip
        cfg = settings(self, ctx, kwargs)
        model, task = ctx.model, detect_task(ctx)
        sample = ctx.X.iloc[: cfg["sample_rows"]]
        n = len(sample)
        problems: list[str] = []
        metrics = {"rows": n, "task": task}

        out, err = call(model.predict, ctx.as_input(sample))
        if err:
            return result("fail", err, metrics)
        problems += _problems(out, n, task, "predict")
        out = np.asarray(out)
        metrics["output_dtype"] = str(out.dtype)
        metrics["output_shape"] = list(out.shape)
        if task == "classification" and ctx.y is not None and not problems:
            known = set(np.unique(np.asarray(ctx.y)).tolist())
            strange = sorted({str(v) for v in np.ravel(out).tolist() if v not in known})[:5]
            if strange and len(known) < 1000:
                problems.append(
                    f"predict returned label(s) never seen in y: {', '.join(strange)}. "
                    "Check that the model was trained on the same target encoding."
                )

        one, err = call(model.predict, ctx.as_input(ctx.X.iloc[:1]), what="predict on a single row")
        problems += [err] if err else _problems(one, 1, task, "predict on a single row")

        if callable(getattr(model, "predict_proba", None)) and task != "regression":
            proba, err = call(model.predict_proba, ctx.as_input(sample), what="predict_proba")
            problems += [err] if err else self._proba(proba, n, cfg, metrics)

        if cfg["check_determinism"] and not problems:
            again, err = call(model.predict, ctx.as_input(sample), what="a second predict")
            if err:
                problems.append(err)
            elif not np.array_equal(np.asarray(again), out, equal_nan=out.dtype.kind in "fc"):
                problems.append(
                    "predict is not deterministic: two calls on the same rows disagree. "
                    "Fix the random state, or make sure predict does not train."
                )

        if problems:
            return result("fail", " ".join(problems), metrics, {"problems": _rows(problems)})
        sane = f"Predicts on {rows_text(n)} and on a single row; output is sane."
        return result("pass", sane, metrics)

    def _proba(self, proba, n: int, cfg: dict, metrics: dict) -> list[str]:
        proba = np.asarray(proba, dtype=float)
        if proba.ndim != 2 or proba.shape[0] != n:
            return [f"predict_proba returned shape {proba.shape}; expected ({n}, n_classes)."]
        if not np.isfinite(proba).all():
            return [f"predict_proba returned {int((~np.isfinite(proba)).sum())} NaN/inf value(s)."]
        off = float(np.abs(proba.sum(axis=1) - 1).max())
        metrics["proba_max_sum_error"] = off
        found = []
        if off > cfg["proba_tolerance"]:
            found.append(f"predict_proba rows do not sum to 1 (largest error {off:.3g}).")
        if proba.min() < -cfg["proba_tolerance"] or proba.max() > 1 + cfg["proba_tolerance"]:
            found.append("predict_proba returned values outside [0, 1].")
        return found


def _rows(problems: list[str]) -> list[dict]:
    return [{"problem": p} for p in problems]
