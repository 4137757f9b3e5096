"""The ``[monitor]`` part of central's policy: windows, thresholds, minimum sample sizes, the
label delay and the action per alert kind, each key declared once (default, bounds, help) in
the dataclasses below, loaded and described by the same walkers as ``[deploy]``.

[monitor]
every_seconds = 300           # how often central evaluates the windows that closed
hourly = false                # closed windows: hourly, daily (UTC days), monthly (UTC months)
daily = true
monthly = true
rolling_minutes = 60          # a near-real-time window ending now (0: none); never alerts
min_samples = 200             # no alert from a window with fewer predictions; it says why
label_delay_hours = 72        # a window's performance waits this long for its labels
min_labels = 200
max_feature_psi = 0.2         # a feature drifts above this PSI (or a significant KS / chi²)
max_drift_share = 0.3         # drift alert: share of drifted features above this
max_one_feature_psi = 0.5     # feature drift alert: any one feature's PSI above this
fire_after = 1                # an alert fires after this many crossing windows in a row
clear_after = 1               # and clears after this many windows back within its clear level
clear_margin = 0.1            # the clear level: this share inside the threshold (hysteresis)

[monitor.actions]             # per alert kind: notify, rollback or retrain
drift = "notify"
performance = "rollback"
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .deploy_policy import _describe, _key, _load_table

ACTIONS = ("notify", "rollback", "retrain")
# Alert kinds, in the words the API, the audit log and the notebook use.
ALERT_KINDS = {
    "error_rate": "error rate",
    "latency": "p99 latency",
    "drift": "input drift",
    "feature_drift": "drift in one feature",
    "prediction_drift": "prediction drift",
    "performance": "performance",
    "estimated_performance": "estimated performance (no labels yet)",
}
# Worst first: the panel's badge names a model's worst open alert. Wrong answers measured on
# labels, then failing requests, then wrong answers estimated, then shifts, then slowness.
SEVERITY = (
    "performance",
    "error_rate",
    "estimated_performance",
    "drift",
    "feature_drift",
    "prediction_drift",
    "latency",
)
WINDOWS = ("hourly", "daily", "monthly")  # closed windows; "rolling" ends at the run's now
METRICS = ("auto", "accuracy", "mae", "rmse")
HISTORY = 50  # most earlier windows of one kind the hysteresis reads (fire_after, clear_after)


def describe_alerts() -> dict:
    """The alert words, their order and the closed window kinds for ``GET /api/v1/meta``
    (``monitor``)."""
    return {"alert_kinds": dict(ALERT_KINDS), "severity": list(SEVERITY), "windows": list(WINDOWS)}


@dataclass(frozen=True)
class MonitorActions:
    """``[monitor.actions]``: what central does when an alert of each kind fires. Every alert
    is an SSE event, an audit row and a delivery to the webhook destinations besides."""

    error_rate: str = _key("notify", "on an error-rate alert", choices=ACTIONS)
    latency: str = _key("notify", "on a p99-latency alert", choices=ACTIONS)
    drift: str = _key("notify", "on an input-drift alert", choices=ACTIONS)
    feature_drift: str = _key("notify", "on a drift-in-one-feature alert", choices=ACTIONS)
    prediction_drift: str = _key("notify", "on a prediction-drift alert", choices=ACTIONS)
    performance: str = _key("notify", "on a labelled-performance alert", choices=ACTIONS)
    estimated_performance: str = _key(
        "notify", "on a label-free (CBPE) performance alert", choices=ACTIONS
    )


@dataclass(frozen=True)
class MonitorPolicy:
    """``[monitor]``: how central watches each deployed model after its push."""

    every_seconds: float = _key(300.0, "seconds between evaluations of closed windows", above=0)
    hourly: bool = _key(False, "evaluate hourly windows")
    daily: bool = _key(True, "evaluate daily windows (UTC days)")
    monthly: bool = _key(True, "evaluate monthly windows (UTC calendar months)")
    rolling_minutes: float = _key(
        60.0, "length of the near-real-time window ending now; 0 for none (it never alerts)", lo=0
    )
    min_samples: int = _key(
        200, "predictions a window needs before it may alert (else it says why)", lo=1
    )
    min_labels: int = _key(200, "labels a window needs before its performance counts", lo=1)
    label_delay_hours: float = _key(
        72.0, "hours after a window's end before its labelled performance closes", lo=0
    )
    label_wait_days: float = _key(
        30.0, "days a window keeps waiting for late labels before it gives up", above=0
    )
    max_error_rate: float = _key(0.05, "alert: share of failed requests", lo=0, hi=1)
    max_p99_ms: float = _key(1000.0, "alert: p99 latency in milliseconds", above=0)
    bins: int = _key(10, "PSI bins, at the reference's quantiles", lo=2, hi=100)
    max_feature_psi: float = _key(0.2, "a feature drifts above this PSI", above=0)
    test_alpha: float = _key(
        0.001, "KS / chi² significance below which a feature may count as drifted", above=0, hi=1
    )
    min_ks: float = _key(
        0.1, "KS statistic a significant numeric shift must reach to count as drift", lo=0, hi=1
    )
    max_unseen_share: float = _key(
        0.05, "a categorical feature drifts when more of its values are unseen", lo=0, hi=1
    )
    max_missing_increase: float = _key(
        0.05,
        "a feature drifts when its share of missing (null or unparseable) values rises by more",
        lo=0,
        hi=1,
    )
    max_drift_share: float = _key(0.3, "alert: share of features that drifted", lo=0, hi=1)
    max_one_feature_psi: float = _key(
        0.5, "alert: one feature's PSI above this, however few of the others drift", above=0
    )
    max_prediction_psi: float = _key(
        0.2, "alert: PSI of predictions against the reference", above=0
    )
    metric: str = _key(
        "auto",
        "labelled metric: auto (accuracy for a classifier, mae for a regressor, as the "
        "version was pushed; else from the values), accuracy, mae or rmse",
        choices=METRICS,
    )
    min_metric_ratio: float = _key(
        0.95,
        "alert: the whole bootstrap CI of the metric is worse than this share of the baseline",
        above=0,
        hi=1,
    )
    confidence: float = _key(0.95, "bootstrap confidence level", lo=0.5, hi=0.999)
    bootstrap: int = _key(200, "bootstrap resamples", lo=20, hi=10_000)
    max_calibration_error: float = _key(
        0.05, "CBPE is trusted only while the scores' calibration error stays below", above=0
    )
    fire_after: int = _key(
        1,
        "an alert fires only after this many crossing windows of one kind in a row (windows "
        "that could not judge it, too few predictions, neither count nor break the run)",
        lo=1,
        hi=HISTORY,
    )
    clear_after: int = _key(
        1,
        "a firing alert clears only after this many windows in a row back within its clear "
        "level (clear_margin)",
        lo=1,
        hi=HISTORY,
    )
    clear_margin: float = _key(
        0.1,
        "hysteresis: an alert clears only once its value is back inside its threshold by this "
        "share of it (0.1: a PSI alert at 0.2 clears at 0.18 or below); for performance, by "
        "this share of the gap between the threshold and the baseline. A value between the "
        "threshold and its clear level neither fires nor clears",
        lo=0,
        hi=1,
    )
    actions: MonitorActions = field(
        default_factory=MonitorActions, metadata={"help": "[monitor.actions]", "table": True}
    )

    @property
    def windows(self) -> tuple[str, ...]:
        return tuple(w for w in WINDOWS if getattr(self, w))

    def action(self, kind: str) -> str:
        return getattr(self.actions, kind)

    # -- hysteresis: the one rule of when an alert fires and clears -----------------------

    def clear_level(self, threshold: float, worse: str, baseline: float | None = None) -> float:
        """The value an alert's reading must be back at (or better) to count toward its
        clearing: ``clear_margin`` inside the threshold, of the threshold's size or, with a
        baseline (performance), of the gap between the two."""
        gap = abs(baseline - threshold) if baseline is not None else abs(threshold)
        margin = self.clear_margin * gap
        return threshold + margin if worse == "below" else threshold - margin

    def reading_state(
        self, value: float, threshold: float, crossed: bool, worse: str, baseline=None
    ) -> str:
        """``crossed``, ``clear`` (back at or past the clear level) or ``between`` (inside
        the threshold, short of the clear level: neither fires nor clears)."""
        if crossed:
            return "crossed"
        level = self.clear_level(threshold, worse, baseline)
        back = value >= level if worse == "below" else value <= level
        return "clear" if back else "between"

    def decide(self, firing: bool, states: list[str]) -> str | None:
        """``fire``, ``clear`` or None, from one alert's states in the latest windows of one
        kind, oldest first (``reading_state``; when it fires, only the windows since the one
        that fired it): ``fire_after`` crossed in a row fire it, ``clear_after`` clear in a
        row clear it. So a metric that wavers around its threshold fires once, not each
        window, and each firing's action (a rollback, a retrain) and notices happen once."""
        need, want = (self.clear_after, "clear") if firing else (self.fire_after, "crossed")
        last = states[-need:]
        if len(last) == need and all(s == want for s in last):
            return "clear" if firing else "fire"
        return None

    @classmethod
    def load(cls, table: Any, path: Any = "policy") -> MonitorPolicy:
        """From the ``[monitor]`` table of a parsed TOML policy; ValueError (one line) if bad."""
        values = _load_table(cls, table, f"{path}: [monitor]")
        sub = table.get("actions", {}) if isinstance(table, dict) else {}
        values["actions"] = MonitorActions(
            **_load_table(MonitorActions, sub, f"{path}: [monitor.actions]")
        )
        return cls(**values)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def describe(self) -> dict:
        """Values and help of every key (``GET /api/v1/meta``), sub-tables nested."""
        return _describe(self)
