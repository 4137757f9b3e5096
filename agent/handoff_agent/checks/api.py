"""The whole check plugin API, in one place.

A check is any object with ``name``, ``title``, ``needs`` and ``run(ctx)``, registered in the
``handoff_agent.checks`` entry point group. Built-in checks register there exactly like a third
party's. ``run`` executes inside a worker subprocess (never in the agent), so it may unpickle,
import sklearn and use as much memory as the worker's limits allow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

STATUSES = ("pass", "warn", "fail", "error", "skip")


@dataclass
class CheckContext:
    """What a check receives. Fields it does not need may be ``None``."""

    model: Any
    manifest: dict
    X: Any = None  # pandas.DataFrame; a Series of strings when ``input_kind`` is "text"
    y: Any = None  # pandas.Series: the evaluation target
    sensitive: Any = None  # pandas.DataFrame: sensitive columns, row-aligned with X
    reference_X: Any = None  # pandas.DataFrame: reference or training sample
    reference_y: Any = None
    champion: Any = None  # the champion's loaded model, when there is one
    champion_manifest: dict | None = None
    previous_manifest: dict | None = None  # the version pushed just before this one
    config: dict = field(default_factory=dict)  # this check's settings, defaults merged
    task: str | None = None  # "classification" | "regression" | None when unknown

    @property
    def input_kind(self) -> str:
        """How the model takes its input: "table" (a DataFrame), "array" (a 2-D numpy array,
        no column names) or "text" (1-D strings, e.g. a Tfidf pipeline)."""
        return ((self.manifest or {}).get("signature") or {}).get("input") or "table"

    def as_input(self, X):
        """Rows of ``X`` (or ``reference_X``) in the form the model was fitted on: what to pass
        to ``predict``. Checks slice pandas (``X.iloc[...]``), then call this."""
        kind = self.input_kind
        if kind == "array" and hasattr(X, "to_numpy"):
            return X.to_numpy()
        if kind == "text" and getattr(X, "ndim", 1) == 2:
            return X.iloc[:, 0]
        return X


@dataclass
class CheckResult:
    """What a check returns. Everything in it must be JSON-serialisable."""

    status: str
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)  # name -> base64 PNG

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")

    def to_json(self) -> dict:
        return asdict(self)


@runtime_checkable
class Check(Protocol):
    """A check plugin."""

    name: str  # unique, matches the entry point name
    title: str  # one line, shown to people
    needs: tuple[str, ...]  # CheckContext fields that must be present, e.g. ("X", "y")
    defaults: dict  # settings and thresholds, overridable by config and per push

    def run(self, ctx: CheckContext, **kwargs) -> CheckResult:
        """Run the check. Raise nothing for a bad model: return status "fail" with a message."""
        ...
