"""Built-in check ``drift``: the evaluation data against the reference (or training) sample.

Per feature: the population stability index (PSI; numeric features binned at the reference's
quantiles, categorical ones by category), the two-sample Kolmogorov-Smirnov statistic for
numeric features, missing-value rates, and categories never seen in the reference.
Text input is judged on each text's length in characters and in words, and its vocabulary
is compared with the reference's (the share of words never seen there).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..plugins import CheckContext, CheckResult
from ._util import figure, fmt, missing, png, result, settings, worst

SMOOTH = 1e-4  # added to empty bins so PSI stays finite


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI between two histograms of counts over the same bins."""
    e = expected / max(expected.sum(), 1) + SMOOTH
    a = actual / max(actual.sum(), 1) + SMOOTH
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def numeric(ref: pd.Series, cur: pd.Series, bins: int) -> dict:
    from scipy.stats import ks_2samp

    r, c = ref.dropna().to_numpy(dtype=float), cur.dropna().to_numpy(dtype=float)
    if len(r) == 0 or len(c) == 0:
        return {"kind": "numeric", "psi": None, "ks": None, "ks_pvalue": None}
    edges = np.unique(np.quantile(r, np.linspace(0, 1, bins + 1)[1:-1]))

    def hist(v):
        return np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)

    ks = ks_2samp(r, c)
    return {
        "kind": "numeric",
        "psi": psi(hist(r), hist(c)),
        "ks": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "mean_ref": float(r.mean()),
        "mean": float(c.mean()),
    }


def categorical(ref: pd.Series, cur: pd.Series, max_listed: int) -> dict:
    r, c = ref.dropna().astype(str), cur.dropna().astype(str)
    rc, cc = r.value_counts(), c.value_counts()
    cats = rc.index.union(cc.index)
    unseen = cc[~cc.index.isin(rc.index)].sort_values(ascending=False)
    return {
        "kind": "categorical",
        "psi": psi(
            rc.reindex(cats, fill_value=0).to_numpy(), cc.reindex(cats, fill_value=0).to_numpy()
        ),
        "unseen_fraction": float(unseen.sum() / max(len(c), 1)),
        "unseen": [str(v) for v in unseen.index[:max_listed]],
    }


def text_features(texts: pd.Series) -> pd.DataFrame:
    """Numbers that describe each text, so the numeric drift tests apply to text input."""
    name = str(texts.name or "text")
    s = texts.astype(object).where(texts.notna(), None)
    return pd.DataFrame(
        {
            f"{name}.chars": s.str.len(),
            f"{name}.words": s.str.split().str.len(),
        }
    ).astype("float64")


_WORD = re.compile(r"\w+")


def _words(texts: pd.Series) -> list[str]:
    return [w for t in texts.dropna().astype(str) for w in _WORD.findall(t.lower())]


def vocabulary(ref: pd.Series, cur: pd.Series) -> dict:
    """The share of the evaluation's words absent from the reference's vocabulary, against
    the same share between two halves of the reference (what new words alone bring)."""
    known = set(_words(ref))
    words = _words(cur)
    oov = sum(w not in known for w in words) / max(len(words), 1)
    half = len(ref) // 2
    first, second = set(_words(ref.iloc[:half])), _words(ref.iloc[half:])
    base = sum(w not in first for w in second) / max(len(second), 1)
    return {
        "feature": f"{ref.name or 'text'}.vocabulary",
        "kind": "vocabulary",
        "psi": None,
        "oov_rate": float(oov),
        "oov_rate_ref": float(base),
        "vocabulary_ref": len(known),
    }


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


class DriftCheck:
    name = "drift"
    title = "Evaluation data resembles the reference data"
    needs = ("X", "reference_X")
    compares_champion = False
    defaults = {
        "bins": 10,
        "psi_warn": 0.1,
        "psi_fail": 0.25,
        "ks_warn": 0.1,  # KS statistic, not p-value: p-values flag trivial shifts on big samples
        "max_missing_increase": 0.05,  # warn when a feature's missing rate rises by more
        "max_unseen_fraction": 0.01,  # warn when more rows than this hold unseen categories
        "max_listed": 10,
        "max_oov_increase": 0.1,  # text: warn when the unseen-word rate rises by more
        "plots": True,
    }

    def run(self, ctx: CheckContext, **kwargs) -> CheckResult:
        skip = missing(self, ctx)
        if skip:
            return skip
        cfg = settings(self, ctx, kwargs)
        X, ref = ctx.X, ctx.reference_X
        rows, notes = [], []  # notes: (status, text)
        if ctx.input_kind == "text":
            words = vocabulary(ref, X)
            rise = words["oov_rate"] - words["oov_rate_ref"]
            words["status"] = "warn" if rise > cfg["max_oov_increase"] else "pass"
            if words["status"] == "warn":
                notes.append(
                    (
                        "warn",
                        f"{words['oov_rate']:.1%} of the words were never seen in the "
                        f"reference (against {words['oov_rate_ref']:.1%} within it)",
                    )
                )
            rows.append(words)
            X, ref = text_features(X), text_features(ref)
        gone = [str(c) for c in ref.columns if c not in X.columns]
        if gone:
            notes.append(("warn", f"column(s) missing from the evaluation data: {gone[:5]}"))
        for col in X.columns:
            if col not in ref.columns:
                rows.append({"feature": str(col), "kind": "new", "status": "warn"})
                notes.append(("warn", f"{col!s} is not in the reference data"))
                continue
            r, c = ref[col], X[col]
            num = _is_numeric(r) and _is_numeric(c)
            row = numeric(r, c, cfg["bins"]) if num else categorical(r, c, cfg["max_listed"])
            row = {"feature": str(col), **row}
            row["missing_ref"] = float(r.isna().mean()) if len(r) else 0.0
            row["missing"] = float(c.isna().mean()) if len(c) else 0.0
            row["status"], why = self._judge(row, cfg)
            notes += [(row["status"], f"{col!s}: {w}") for w in why]
            rows.append(row)
        rows.sort(key=lambda r: -(r.get("psi") or 0))
        scored = [r for r in rows if r.get("psi") is not None]
        metrics = {
            "features": len(X.columns) if ctx.input_kind != "text" else 1,
            "drifted": sum(r["status"] != "pass" for r in rows),
            "max_psi": max((r["psi"] for r in scored), default=None),
            "max_psi_feature": scored[0]["feature"] if scored else None,
            "psi": {r["feature"]: r["psi"] for r in scored},
        }
        status = worst([s for s, _ in notes])
        if status == "pass":
            message = (
                f"No drift over {len(rows)} feature(s); largest PSI {fmt(metrics['max_psi'])}."
            )
        else:
            order = ("fail", "warn")
            texts = [t for _, t in sorted(notes, key=lambda n: order.index(n[0]))]
            more = f" (and {len(texts) - 6} more)" if len(texts) > 6 else ""
            message = "Drift: " + "; ".join(texts[:6]) + more + "."
        plots = {}
        if cfg["plots"] and scored and scored[0]["kind"] == "numeric":
            plots["most_drifted"] = self._plot(ref, X, scored[0]["feature"])
        return result(status, message, metrics, {"features": rows}, plots)

    def _judge(self, row: dict, cfg: dict) -> tuple[str, list[str]]:
        status, why = "pass", []
        p = row.get("psi")
        if p is not None and p > cfg["psi_fail"]:
            status, why = "fail", [f"PSI {p:.3f} over {cfg['psi_fail']}"]
        elif p is not None and p > cfg["psi_warn"]:
            status, why = "warn", [f"PSI {p:.3f} over {cfg['psi_warn']}"]
        if (row.get("ks") or 0) > cfg["ks_warn"] and status == "pass":
            status, why = "warn", [f"KS statistic {row['ks']:.3f} over {cfg['ks_warn']}"]
        rise = row["missing"] - row["missing_ref"]
        if rise > cfg["max_missing_increase"]:
            status = worst([status, "warn"])
            why.append(f"missing rate rose from {row['missing_ref']:.1%} to {row['missing']:.1%}")
        if row.get("unseen_fraction", 0) > cfg["max_unseen_fraction"]:
            status = worst([status, "warn"])
            listed = ", ".join(repr(v) for v in row["unseen"][:3])
            why.append(f"{row['unseen_fraction']:.1%} of rows hold unseen categories ({listed})")
        return status, why

    def _plot(self, ref, X, col) -> str:
        fig, ax = figure(3.6, 2.6)
        r, c = ref[col].dropna().astype(float), X[col].dropna().astype(float)
        bins = np.histogram_bin_edges(np.concatenate([r, c]), bins=30)
        ax.hist(r, bins=bins, alpha=0.5, density=True, label="reference")
        ax.hist(c, bins=bins, alpha=0.5, density=True, label="evaluation")
        ax.set(title=f"Most drifted: {col}")
        ax.legend()
        return png(fig)
