"""Rolling traffic statistics per (model, version, slot), cheap on the hot path and mergeable.

Each request updates a few counters in the current time slice: a count, errors, a latency
histogram (log buckets, about 2% relative error), class counts and a score histogram over fixed
edges. Labels joined later, and shadow/production pairs, update the slice they arrive in.
Histograms are sparse dicts of bucket -> count, so two workers' (or replicas') stats over the
same slices add up exactly: ``merge`` is addition, and quantiles come from the merged buckets.

The caller owns the clock: every update and query takes ``now`` (seconds). Slices start at
multiples of ``slice_seconds``, so slices from different processes line up. No I/O here;
``to_dict``/``from_dict`` give plain JSON for shipping between processes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..drift import PER_BIN, coarsen, number, psi, psi_classes, same_class

GAMMA = 1.04  # latency bucket growth: bucket i covers (MIN_MS * GAMMA**(i-1), MIN_MS * GAMMA**i]
MIN_MS = 0.001
_LOG_GAMMA = math.log(GAMMA)
_PLAIN = frozenset({str, int, bool, float})
SLICE_DEFAULT = 10.0  # seconds; central's model server uses its own (server.SLICE_SECONDS)
PROBABILITY_EDGES = tuple(i / 100 for i in range(1, 100))  # 100 bins over [0, 1] for scores


def latency_bucket(ms: float) -> int:
    """The histogram bucket of a latency in milliseconds (0 for anything up to ``MIN_MS``)."""
    if ms <= MIN_MS:
        return 0
    return math.ceil(math.log(ms / MIN_MS) / _LOG_GAMMA)


def bucket_value(i: int) -> float:
    """A bucket's representative latency, within GAMMA's relative error of any value in it."""
    if i <= 0:
        return MIN_MS
    return MIN_MS * GAMMA**i * 2 / (1 + GAMMA)


def _add(into: dict, other: dict) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


@dataclass
class WindowStats:
    """Counters over one span of time: one slice, or several merged. All fields add up."""

    count: int = 0
    errors: int = 0
    latency: dict[int, int] = field(default_factory=dict)  # latency_bucket -> count
    classes: dict = field(default_factory=dict)  # predicted class -> count (per row)
    scores: dict[int, int] = field(default_factory=dict)  # score bin -> count (per row)
    labelled: int = 0  # (prediction, label) pairs joined from feedback
    correct: int = 0  # ...whose prediction equals the label
    abs_err: float = 0.0  # ...sum of |prediction - label| where both are numbers
    sq_err: float = 0.0
    quad_err: float = 0.0  # ...sum of (prediction - label) ** 4, for the variance of sq_err
    numeric_labels: int = 0  # pairs that contributed to abs_err / sq_err
    paired: int = 0  # shadow responses compared with production's for the same request
    agreed: int = 0  # ...that predicted the same class

    def merge(self, other: WindowStats) -> WindowStats:
        """Add ``other`` into this one (in place) and return it."""
        for name in ("count", "errors", "labelled", "correct", "numeric_labels"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("abs_err", "sq_err", "quad_err", "paired", "agreed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        _add(self.latency, other.latency)
        _add(self.classes, other.classes)
        _add(self.scores, other.scores)
        return self

    # -- what the guardrails read -------------------------------------------------------------

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.count if self.count else None

    def latency_quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of latency in ms, nearest rank over the buckets."""
        n = sum(self.latency.values())
        if not n:
            return None
        rank = max(1, math.ceil(q * n))
        seen = 0
        for i in sorted(self.latency):
            seen += self.latency[i]
            if seen >= rank:
                return bucket_value(i)
        return bucket_value(max(self.latency))  # pragma: no cover (rank <= n)

    @property
    def p50(self) -> float | None:
        return self.latency_quantile(0.5)

    @property
    def p99(self) -> float | None:
        return self.latency_quantile(0.99)

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.paired if self.paired else None

    def live(self, metric: str) -> float | None:
        """``accuracy``, ``mae`` or ``rmse`` on the labelled requests; None without labels."""
        if metric == "accuracy":
            return self.correct / self.labelled if self.labelled else None
        if not self.numeric_labels:
            return None
        mean = (self.abs_err if metric == "mae" else self.sq_err) / self.numeric_labels
        return mean if metric == "mae" else math.sqrt(mean)

    def live_moments(self, metric: str) -> tuple[float, float, int] | None:
        """(mean, variance of the mean, n) of what ``metric`` averages per labelled request:
        correctness (accuracy), absolute error (mae), squared error (rmse). None without
        labels."""
        if metric == "accuracy":
            n = self.labelled
            if not n:
                return None
            p = self.correct / n
            return p, p * (1 - p) / n, n
        n = self.numeric_labels
        if not n:
            return None
        first, second = (
            (self.abs_err, self.sq_err) if metric == "mae" else (self.sq_err, self.quad_err)
        )
        mean = first / n
        return mean, max(second / n - mean * mean, 0.0) / n, n

    @property
    def predictions(self) -> int:
        """Rows whose output was recorded (scores if any, else classes)."""
        return sum(self.scores.values()) or sum(self.classes.values())

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if v}
        for name in ("latency", "scores"):
            if name in d:
                d[name] = {str(k): v for k, v in d[name].items()}
        if "classes" in d:  # JSON keys are strings: keep each class's type beside it
            d["classes"] = [[k, v] for k, v in d["classes"].items()]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WindowStats:
        d = dict(d)
        for name in ("latency", "scores"):
            if name in d:
                d[name] = {int(k): v for k, v in d[name].items()}
        if "classes" in d:
            d["classes"] = {(tuple(k) if isinstance(k, list) else k): v for k, v in d["classes"]}
        return cls(**d)

    def summary(self) -> dict:
        """The numbers a person reads (deployments view, events)."""
        return {
            "requests": self.count,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p50_ms": self.p50,
            "p99_ms": self.p99,
            "labelled": self.labelled,
        }


def prediction_psi(
    current: WindowStats, reference: WindowStats, bins: int = 10
) -> tuple[float | None, str | None]:
    """PSI of ``current``'s predictions against ``reference``'s, and what it was computed on:
    ``"scores"`` (quantile bins of the reference's score histogram) where both recorded scores,
    else ``"classes"``; (None, None) when either side has no predictions. Scores get fewer
    than ``bins`` bins while ``current`` has under ``PER_BIN`` predictions per bin: PSI's
    expected value on two samples of one distribution grows with bins / rows. Classes alike:
    rare ones are grouped (``psi_classes``) until each bin holds about ``PER_BIN``."""
    if current.scores and reference.scores:
        bins = max(2, min(bins, sum(current.scores.values()) // PER_BIN))
        keys = sorted(set(current.scores) | set(reference.scores))
        e, a = coarsen(
            [reference.scores.get(k, 0) for k in keys],
            [current.scores.get(k, 0) for k in keys],
            bins,
        )
        return psi(e, a), "scores"
    if current.classes and reference.classes:
        bins = max(2, sum(current.classes.values()) // PER_BIN)
        return psi_classes(reference.classes, current.classes, bins=bins), "classes"
    return None, None


def first_slice(since: float, slice_seconds: float) -> int:
    """The first slice counted for stats asked ``since`` a moment: the first that starts at or
    after it. A slice is counted whole or not at all, so the one holding ``since`` is not: its
    requests from before (a canary's before its share changed, or before a rollback under
    it) would count toward a bake that had not begun."""
    return math.ceil(since / slice_seconds)


def counted_from(since: float, slice_seconds: float) -> float:
    """When stats asked ``since`` a moment start counting: ``first_slice``'s start. A canary's
    bake (and a step, and a shadow's report) runs from here: its time as well as its
    requests."""
    return first_slice(since, slice_seconds) * slice_seconds


class RollingStats:
    """One (model, version, slot)'s stats in time slices, keeping ``window_seconds`` of them.

    ``record`` is the hot path: one dict lookup for the slice, then counter updates."""

    def __init__(
        self,
        window_seconds: float = 3600.0,
        slice_seconds: float = SLICE_DEFAULT,
        score_edges: Iterable[float] = PROBABILITY_EDGES,
    ):
        if slice_seconds <= 0 or window_seconds < slice_seconds:
            raise ValueError("RollingStats needs 0 < slice_seconds <= window_seconds")
        self.window_seconds = float(window_seconds)
        self.slice_seconds = float(slice_seconds)
        self.score_edges = tuple(float(e) for e in score_edges)
        self.slices: dict[int, WindowStats] = {}  # slice index (start // slice_seconds) -> stats
        self._current = (None, None)

    def _slice(self, now: float) -> WindowStats:
        i = int(now // self.slice_seconds)
        if self._current[0] == i:
            return self._current[1]
        s = self.slices.get(i)
        if s is None:
            s = self.slices[i] = WindowStats()
            self._expire(i)
        self._current = (i, s)
        return s

    def _expire(self, newest: int) -> None:
        """Forget slices that fell out of the window ending with slice ``newest``."""
        oldest = newest - math.ceil(self.window_seconds / self.slice_seconds)
        for i in [i for i in self.slices if i <= oldest]:
            del self.slices[i]
        if self._current[0] is not None and self._current[0] <= oldest:
            self._current = (None, None)

    def score_bin(self, score: float) -> int:
        """The score histogram's bin: i for edges[i-1] <= score < edges[i]."""
        return bisect.bisect_right(self.score_edges, score)

    def record(
        self,
        now: float,
        latency_ms: float,
        *,
        error: bool = False,
        classes: Iterable = (),
        scores: Iterable[float] = (),
    ) -> None:
        """One request: its latency, whether it failed, and its rows' predicted classes and/or
        scores (a probability, or a regressor's output) when it succeeded."""
        cur = self._current  # the hot path: the current slice, else find or make it
        s = cur[1] if cur[0] == int(now // self.slice_seconds) else self._slice(now)
        s.count += 1
        b = (
            math.ceil(math.log(latency_ms / MIN_MS) / _LOG_GAMMA) if latency_ms > MIN_MS else 0
        )  # latency_bucket, inlined
        lat = s.latency
        lat[b] = lat.get(b, 0) + 1
        if error:
            s.errors += 1
            return
        if classes:
            counts = s.classes
            for c in classes:
                if type(c) not in _PLAIN:
                    c = c.item() if hasattr(c, "item") else c  # numpy scalars as their value
                counts[c] = counts.get(c, 0) + 1
        if scores:
            bins, edges = s.scores, self.score_edges
            for x in scores:
                if x == x:  # NaN has no bin
                    b = bisect.bisect_right(edges, x)
                    bins[b] = bins.get(b, 0) + 1

    def record_label(self, now: float, prediction, label) -> None:
        """A (prediction, label) pair joined from feedback: counts toward live performance."""
        s = self._slice(now)
        s.labelled += 1
        s.correct += same_class(prediction, label)
        p, y = number(prediction), number(label)
        if p is not None and y is not None:
            err = p - y
            s.abs_err += abs(err)
            s.sq_err += err * err
            s.quad_err += err**4
            s.numeric_labels += 1

    def record_pair(self, now: float, agree: bool) -> None:
        """A shadow response compared with production's answer to the same request."""
        s = self._slice(now)
        s.paired += 1
        s.agreed += bool(agree)

    def window(self, now: float, since: float | None = None) -> WindowStats:
        """The slices of the last ``window_seconds`` up to ``now``, merged; with ``since``,
        only the slices that start at or after it (``counted_from``)."""
        lo = int((now - self.window_seconds) // self.slice_seconds)
        if since is not None:
            lo = max(lo, first_slice(since, self.slice_seconds) - 1)
        hi = int(now // self.slice_seconds)
        out = WindowStats()
        for i, s in self.slices.items():
            if lo < i <= hi:
                out.merge(s)
        return out

    def merge(self, other: RollingStats) -> RollingStats:
        """Add another process's slices (same slice length) into these."""
        if other.slice_seconds != self.slice_seconds:
            raise ValueError("RollingStats.merge needs the same slice_seconds on both sides")
        for i, s in other.slices.items():
            mine = self.slices.get(i)
            if mine is None:
                self.slices[i] = WindowStats().merge(s)
            else:
                mine.merge(s)
        if self.slices:
            self._expire(max(self.slices))
        return self

    def to_dict(self) -> dict:
        return {
            "window_seconds": self.window_seconds,
            "slice_seconds": self.slice_seconds,
            "score_edges": list(self.score_edges),
            "slices": {str(i): s.to_dict() for i, s in self.slices.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> RollingStats:
        r = cls(d["window_seconds"], d["slice_seconds"], d["score_edges"])
        r.slices = {int(i): WindowStats.from_dict(s) for i, s in d["slices"].items()}
        return r

    def drain(self) -> dict:
        """``to_dict`` of everything recorded so far, then forget it: a worker ships this to
        the process that merges (``StatsBook.absorb``), so each count travels once."""
        out = self.to_dict()
        self.slices = {}
        self._current = (None, None)
        return out


Key = tuple[str, int, str]  # (model, version, slot)


class StatsBook:
    """RollingStats per (model, version, slot), created on first use."""

    def __init__(self, **options):
        self.options = options  # RollingStats arguments for every new key
        self.stats: dict[Key, RollingStats] = {}
        self.slice_seconds = float(options.get("slice_seconds", SLICE_DEFAULT))

    def get(self, model: str, version: int, slot: str) -> RollingStats:
        key = (model, int(version), slot)
        r = self.stats.get(key)
        if r is None:
            r = self.stats[key] = RollingStats(**self.options)
        return r

    def window(
        self, model: str, version: int, slot: str, now: float, since: float | None = None
    ) -> WindowStats:
        r = self.stats.get((model, int(version), slot))
        return r.window(now, since) if r else WindowStats()

    def drain(self) -> list[dict]:
        """Every key's drained slices, as plain JSON for another process's ``absorb``."""
        out = [
            {"model": m, "version": v, "slot": s, "stats": r.drain()}
            for (m, v, s), r in self.stats.items()
            if r.slices
        ]
        return out

    def absorb(self, drained: list[dict]) -> None:
        """Merge what another process's ``drain`` returned."""
        for item in drained:
            incoming = RollingStats.from_dict(item["stats"])
            self.get(item["model"], item["version"], item["slot"]).merge(incoming)

    def drain_slices(self) -> list[dict]:
        """Like ``drain``, one item per (key, slice): ``{model, version, slot, slice, stats}``
        with ``stats`` a ``WindowStats.to_dict`` (what the serving_stats table holds)."""
        out = []
        for (m, v, s), r in self.stats.items():
            for i, w in r.slices.items():
                out.append({"model": m, "version": v, "slot": s, "slice": i, "stats": w.to_dict()})
            r.slices, r._current = {}, (None, None)
        return out

    def add_slice(self, model: str, version: int, slot: str, index: int, stats: dict) -> None:
        """Merge one stored slice (``drain_slices``' item) into this book."""
        r = self.get(model, version, slot)
        mine = r.slices.get(int(index))
        incoming = WindowStats.from_dict(stats)
        if mine is None:
            r.slices[int(index)] = incoming
        else:
            mine.merge(incoming)

    def forget(self, model: str, version: int, slot: str) -> None:
        """Drop a key (a version left its slot)."""
        self.stats.pop((model, int(version), slot), None)
