"""Distribution shift and live performance, shared by the canary guardrails and monitoring.

Everything here is pure numpy on counts or arrays, so a serving tick, a monitor window and the
``drift`` check compute the same numbers:

- ``psi`` on two histograms over the same bins; ``psi_scores`` bins numbers at the reference's
  quantiles; ``psi_classes`` compares class (or category) counts, unseen ones included;
  ``coarsen`` turns two fine fixed histograms (serving's mergeable ones) into quantile bins of
  the reference before PSI, so a fine histogram does not inflate PSI on small samples.
- ``class_agreement``: the share of paired predictions (shadow and production on one request)
  that agree.
- ``live_metric`` and ``live_ratio``: performance on (prediction, label) pairs, and one
  version's against another's oriented so that below 1 is always worse; ``significantly_worse``
  says whether a shortfall below a ratio is more than sampling noise.

PSI reads: below 0.1 no real shift, 0.1 to 0.25 a moderate one, above 0.25 a significant one
(``psi_band``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .vocabulary import HIGHER_IS_BETTER

EPSILON = 1e-4  # added to every bin's share (then renormalised) so an empty bin stays finite
# Observations per bin at least on the current side: PSI's expected value on two samples of
# one distribution grows with bins / rows, so fewer rows get fewer (coarser) bins.
PER_BIN = 20
PSI_BANDS = ((0.1, "none"), (0.25, "moderate"), (math.inf, "significant"))
LIVE_METRICS = ("accuracy", "mae", "rmse")  # directions from vocabulary.HIGHER_IS_BETTER


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = EPSILON) -> float:
    """Population stability index of ``actual`` against ``expected``, two histograms of counts
    over the same bins: sum over bins of (a - e) * ln(a / e) on the shares. Each share gets
    ``eps`` added and the shares are renormalised, so an empty bin costs a lot but stays
    finite. An empty histogram on either side gives 0 (nothing to compare)."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape:
        raise ValueError(f"psi needs histograms over the same bins, got {e.shape} and {a.shape}")
    if e.sum() <= 0 or a.sum() <= 0:
        return 0.0
    e = e / e.sum() + eps
    a = a / a.sum() + eps
    e, a = e / e.sum(), a / a.sum()
    keep = (e > 0) & (a > 0)  # eps=0 and a bin empty on both sides: it contributes nothing
    return float(np.sum((a[keep] - e[keep]) * np.log(a[keep] / e[keep])))


def quantile_edges(reference: Iterable[float], bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (``bins`` bins, fewer where values tie, a
    tied value alone in its bin); the outer bins are open, so any value falls somewhere."""
    r = np.asarray(list(reference) if not isinstance(reference, np.ndarray) else reference)
    r = r[np.isfinite(r.astype(float))].astype(float)
    if r.size == 0:
        return np.empty(0)
    q = np.quantile(r, np.linspace(0, 1, bins + 1)[1:-1])
    # A value several quantiles share (a constant column, a count that is mostly 0) gets a bin
    # of its own: else it and everything above it share one, and no shift of them shows.
    tied = np.unique(q[1:][q[1:] == q[:-1]])
    return np.unique(np.concatenate([q, np.nextafter(tied, np.inf)]))


def histogram(values: Iterable[float], edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins ``quantile_edges`` describes (len(edges) + 1 bins):
    bin i holds edges[i-1] <= v < edges[i]. Non-finite values are left out."""
    v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    v = v[np.isfinite(v)]
    return np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)


def psi_scores(
    reference: Iterable[float], current: Iterable[float], bins: int = 10, eps: float = EPSILON
) -> float:
    """PSI of numeric values (scores, a numeric feature) over ``bins`` quantile bins of the
    reference."""
    ref = np.asarray(list(reference) if not isinstance(reference, np.ndarray) else reference)
    edges = quantile_edges(ref, bins)
    return psi(histogram(ref, edges), histogram(current, edges), eps)


def class_counts(values: Iterable | Mapping) -> dict:
    """Counts per class from a sequence of labels, or a mapping that already is one."""
    if isinstance(values, Mapping):
        return dict(values)
    counts: dict = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def psi_classes(
    reference: Iterable | Mapping, current: Iterable | Mapping, eps=EPSILON, bins: int | None = None
) -> float:
    """PSI over classes or categories: labels, or {class: count} mappings. A class seen on one
    side only counts as an empty bin on the other.

    ``bins``: at most about that many bins, as ``coarsen`` groups a fine histogram: the
    reference's classes, commonest first, grouped so that each group holds an equal share of
    it (a common class alone, rare ones together), and the classes only ``current`` has in one
    bin of their own. Without it, on a few hundred predictions of many classes, the rare
    classes a sample happens to miss cost ``eps``'s price each and PSI alarms on noise."""
    ref, cur = class_counts(reference), class_counts(current)
    if bins is None:
        keys = sorted(set(ref) | set(cur), key=str)
        return psi([ref.get(k, 0) for k in keys], [cur.get(k, 0) for k in keys], eps)
    seen = sorted((k for k in ref if ref[k] > 0), key=lambda k: (-ref[k], str(k)))
    e, a = coarsen([ref[k] for k in seen], [cur.get(k, 0) for k in seen], bins)
    unseen = sum(n for k, n in cur.items() if ref.get(k, 0) <= 0)
    if unseen:
        e, a = np.append(e, 0), np.append(a, unseen)
    return psi(e, a, eps)


def coarsen(
    expected: Sequence[float], actual: Sequence[float], bins: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Two fine histograms over the same bins, regrouped into about ``bins`` groups of adjacent
    bins holding equal shares of ``expected`` (quantile bins of the reference, computed from
    its histogram). PSI on the groups matches ``psi_scores`` up to the fine bins' width."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape:
        raise ValueError(f"coarsen needs histograms over the same bins: {e.shape}, {a.shape}")
    total = e.sum()
    if total <= 0 or len(e) <= bins:
        return e, a
    # group index of each fine bin: which reference quantile its cumulative share reaches
    cum = np.cumsum(e) / total
    group = np.minimum(np.ceil(cum * bins - 1e-9).astype(int), bins) - 1
    group = np.maximum.accumulate(np.maximum(group, 0))
    n = group[-1] + 1
    return np.bincount(group, weights=e, minlength=n), np.bincount(group, weights=a, minlength=n)


def psi_band(value: float | None) -> str | None:
    """ "none", "moderate" or "significant" for a PSI value, by the usual rule of thumb."""
    if value is None:
        return None
    return next(word for bound, word in PSI_BANDS if value < bound)


def class_agreement(a: Iterable, b: Iterable) -> float | None:
    """Share of positions where two paired sequences of predicted classes agree; None if
    empty."""
    x, y = list(a), list(b)
    if len(x) != len(y):
        raise ValueError(f"class_agreement needs paired predictions, got {len(x)} and {len(y)}")
    if not x:
        return None
    return sum(p == q for p, q in zip(x, y, strict=True)) / len(x)


def number(value) -> float | None:
    """A label or a prediction as a finite number: ints, floats and numeric text (a label
    sent as ``"1"`` or ``"3.5"``); None for anything else (a class name, a bool, a list,
    ``"nan"``, which would make every error after it NaN)."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.number | str):
        try:
            f = float(value)
        except (ValueError, OverflowError):
            return None
        return f if math.isfinite(f) else None
    return None


def same_class(prediction, label) -> bool:
    """Whether a predicted class is the label: equal, or the same number whatever its type
    (a label sent as ``"1"`` for the class ``1``, as the monitor compares them)."""
    if prediction == label:
        return True
    p, y = number(prediction), number(label)
    return p is not None and p == y


def live_metric(predictions: Iterable, labels: Iterable, metric: str = "accuracy") -> float | None:
    """Performance on labelled requests: ``accuracy`` (predicted class equals the label),
    ``mae`` or ``rmse`` (numbers). None without pairs."""
    p, y = list(predictions), list(labels)
    if len(p) != len(y):
        raise ValueError(f"live_metric needs one label per prediction, got {len(p)}, {len(y)}")
    if not p:
        return None
    if metric == "accuracy":
        return sum(same_class(a, b) for a, b in zip(p, y, strict=True)) / len(p)
    err = np.asarray(p, dtype=float) - np.asarray(y, dtype=float)
    if metric == "mae":
        return float(np.mean(np.abs(err)))
    if metric == "rmse":
        return float(np.sqrt(np.mean(err**2)))
    raise ValueError(f"Unknown live metric {metric!r}; use one of {', '.join(LIVE_METRICS)}")


def live_ratio(candidate: float | None, baseline: float | None, metric: str) -> float | None:
    """How the candidate's live metric compares with the baseline's, as a ratio where 1 is
    equal and below 1 is worse whatever the metric's direction: candidate / baseline when
    higher is better (accuracy), baseline / candidate when lower is (mae, rmse). None when
    either is missing or the ratio is undefined (a zero to divide by)."""
    if candidate is None or baseline is None:
        return None
    top, bottom = (candidate, baseline) if HIGHER_IS_BETTER[metric] else (baseline, candidate)
    if bottom == 0:
        return None if top == 0 else math.inf
    return top / bottom


def significantly_worse(
    candidate: tuple[float, float],
    baseline: tuple[float, float],
    metric: str,
    min_ratio: float,
    z: float,
) -> bool:
    """Whether the candidate's ``live_ratio`` against the baseline is below ``min_ratio`` by
    more than ``z`` standard errors, so a few unlucky labels do not count as a regression.

    ``candidate`` and ``baseline`` are (mean, variance of that mean) of the per-request
    quantity the metric averages: 1/0 for a correct prediction (accuracy), the absolute error
    (mae), the squared error (rmse, whose ratio of roots is compared as a ratio of means)."""
    (mc, vc), (mb, vb) = candidate, baseline
    if HIGHER_IS_BETTER[metric]:  # mc / mb < r  <=>  r * mb - mc > 0
        gap, var = min_ratio * mb - mc, vc + min_ratio**2 * vb
    else:  # mb / mc < k, with k = r for mae and r**2 for the mean squared error
        k = min_ratio if metric == "mae" else min_ratio**2
        gap, var = k * mc - mb, k**2 * vc + vb
    return gap > 0 and gap > z * math.sqrt(max(var, 0.0))
