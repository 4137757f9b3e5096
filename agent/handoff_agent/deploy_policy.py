"""The ``[deploy]`` part of central's policy: canary schedule, guardrail alarms, shadow gating
and the load-test gate, each key declared once (default, bounds, help) in the dataclasses below.

[deploy]
steps = [5, 25, 50]           # linear canary: the share at each step (or `canary_percent = 10`)
step_seconds = 120            # time at each step but the last
bake_seconds = 300            # clean bake at the last step before promotion is ready
min_requests = 100            # no decision on fewer canary requests than this
max_error_rate = 0.01         # alarms: any one rolls the canary back at once
max_p99_ratio = 1.5
max_psi = 0.2
min_live_metric_ratio = 0.95
shadow = true                 # mirror traffic to the candidate before its canary
min_agreement = 0.95
max_shadow_psi = 0.2
shadow_gate = true            # the shadow report must pass before the canary
promote_after_bake = true     # production waits for the canary's clean bake

[deploy.loadtest]             # the `validated` stage's load test against production
max_p99_ratio = 2.0
min_throughput_ratio = 0.5
max_error_rate = 0.01
block_on = "fail"             # or "not_passed" (wait for it), "never" (only shown)

The loader, the error lines and ``describe`` (served at ``GET /api/v1/meta``) all walk the
fields' metadata, so a key exists in one place. A bad value stops central with one line
naming the file, the table, the key and what it takes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .vocabulary import TRAFFIC_SHARE

LIVE_METRICS = ("auto", "accuracy", "mae", "rmse")  # auto: accuracy for classes, else mae
LOADTEST_BLOCKS = ("fail", "not_passed", "never")


def _key(default: Any, help: str, *, lo=None, hi=None, above=None, choices=None):
    """A policy key: ``lo``/``hi`` inclusive bounds, ``above`` an exclusive lower bound."""
    meta = {"help": help, "lo": lo, "hi": hi, "above": above, "choices": choices}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class LoadTestPolicy:
    """``[deploy.loadtest]``: gates of the load test run when a version enters ``validated``,
    each against the production version measured in the same run."""

    max_p99_ratio: float = _key(
        2.0, "p99 latency may be at most this multiple of production's", above=0
    )
    p99_slack_ms: float = _key(
        5.0, "p99 differences below this many ms never fail it (a busy machine's jitter)", lo=0
    )
    min_throughput_ratio: float = _key(
        0.5, "throughput must be at least this share of production's", lo=0
    )
    max_error_rate: float = _key(0.01, "share of load-test requests that may fail", lo=0, hi=1)
    concurrency: tuple[int, ...] = _key(
        (1, 8, 32), "concurrent clients at each level of the load test", lo=1, hi=1024
    )
    requests: int = _key(500, "requests sent at each concurrency level", lo=1)
    block_on: str = _key(
        "fail",
        "what keeps a version from moving beyond validated: fail (a failed load test), "
        "not_passed (also one not finished yet), never (the results are only shown)",
        choices=LOADTEST_BLOCKS,
    )


@dataclass(frozen=True)
class DeployPolicy:
    """``[deploy]``: how a canary is rolled out, watched and rolled back."""

    canary_percent: float = _key(
        10.0, "canary share of traffic, in percent (without steps)", above=0, hi=TRAFFIC_SHARE[1]
    )
    steps: tuple[float, ...] = _key(
        (),
        "linear canary: increasing shares in percent, one per step (replaces canary_percent)",
        above=0,
        hi=TRAFFIC_SHARE[1],
    )
    step_seconds: float = _key(
        120.0,
        "seconds at each step before the next, counted from the first 5 s stats slice after "
        "the share was set",
        above=0,
    )
    bake_seconds: float = _key(
        300.0,
        "seconds of clean bake at the last step before promotion is ready, counted from the "
        "first 5 s stats slice after the share was set",
        lo=0,
    )
    min_requests: int = _key(100, "canary requests needed before any decision", lo=1)
    max_error_rate: float = _key(0.01, "alarm: share of canary requests that fail", lo=0, hi=1)
    max_p99_ratio: float = _key(1.5, "alarm: canary p99 latency over production's", above=0)
    p99_slack_ms: float = _key(
        1.0, "p99 differences below this many ms never alarm (loopback noise)", lo=0
    )
    max_psi: float = _key(0.2, "alarm: PSI of canary predictions against production's", above=0)
    min_live_metric_ratio: float = _key(
        0.95, "alarm: canary live performance over production's, where labels arrived", lo=0
    )
    live_metric: str = _key(
        "auto",
        "metric on labelled requests: auto (accuracy for classes, else mae), accuracy, mae or rmse",
        choices=LIVE_METRICS,
    )
    min_labels: int = _key(50, "labels each side needs before the live alarm applies", lo=1)
    live_confidence: float = _key(
        0.99,
        "confidence (one-sided) that a live shortfall is not label noise, and that a canary "
        "failing more often than a production that fails too is not chance",
        lo=0.5,
        hi=0.9999,
    )
    shadow: bool = _key(False, "mirror traffic to the candidate before its canary")
    min_agreement: float = _key(
        0.95, "shadow gate: share of mirrored requests predicting production's class", lo=0, hi=1
    )
    max_shadow_psi: float = _key(0.2, "shadow gate: PSI against production's predictions", above=0)
    shadow_gate: bool = _key(
        True, "with shadow = true, the move to canary waits until the shadow report passes"
    )
    promote_after_bake: bool = _key(
        True,
        "promotion to production waits for the canary's clean bake against the production it "
        "replaces (a model's first version has none: its sign-offs suffice)",
    )
    loadtest: LoadTestPolicy = field(
        default_factory=LoadTestPolicy, metadata={"help": "[deploy.loadtest]", "table": True}
    )

    @property
    def schedule(self) -> tuple[float, ...]:
        """The canary's shares in order: the steps, or the one canary_percent."""
        return self.steps or (self.canary_percent,)

    @classmethod
    def load(cls, table: Any, path: Any = "policy") -> DeployPolicy:
        """From the ``[deploy]`` table of a parsed TOML policy; ValueError (one line) if bad."""
        values = _load_table(cls, table, f"{path}: [deploy]")
        if values.get("steps") and "canary_percent" in values:
            raise ValueError(
                f"{path}: [deploy] gives both canary_percent and steps: steps replace "
                "canary_percent (a linear canary); remove one of them."
            )
        steps = values.get("steps", ())
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(
                f"{path}: [deploy] steps = {list(steps)}: each step must be a larger share "
                "than the one before, e.g. [5, 25, 50]."
            )
        sub = table.get("loadtest", {}) if isinstance(table, dict) else {}
        values["loadtest"] = LoadTestPolicy(
            **_load_table(LoadTestPolicy, sub, f"{path}: [deploy.loadtest]")
        )
        return cls(**values)

    # Read as a mapping too, key by key.
    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def describe(self) -> dict:
        """Values and help of every key (``GET /api/v1/meta``), sub-tables nested."""
        return _describe(self)


def _describe(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("table"):
            out[f.name] = _describe(value)
        else:
            out[f.name] = {
                "value": list(value) if isinstance(value, tuple) else value,
                "default": list(f.default) if isinstance(f.default, tuple) else f.default,
                "help": f.metadata["help"],
            }
    return out


def _load_table(cls, table: Any, where: str) -> dict:
    """The keys given in ``table`` (a TOML table), each checked against its declaration."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(table, dict):  # the example is one of its own keys, not another table's
        first = next(f for f in fields.values() if not f.metadata.get("table"))
        example = json.dumps(
            list(first.default) if isinstance(first.default, tuple) else first.default
        )
        raise ValueError(f"{where} must be a table of keys, e.g. {first.name} = {example}.")
    values = {}
    for name, raw in table.items():
        f = fields.get(name)
        if f is None:
            known = ", ".join(n for n in fields if not fields[n].metadata.get("table"))
            raise ValueError(f"{where}: unknown key {name!r}; the keys are {known}.")
        if f.metadata.get("table"):
            continue
        problem = _problem(f, raw)
        if problem:
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            raise ValueError(
                f"{where} {name} = {_show(raw)}: {problem} ({f.metadata['help']}; "
                f"default {_show(default)})."
            )
        values[name] = tuple(raw) if isinstance(raw, list) else raw
    return values


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\n", "\\n") + '"'
    return repr(value).replace("\n", "\\n")


def _number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):  # TOML true is not 1
        return False
    if integer:
        return isinstance(value, int)
    return isinstance(value, int | float) and math.isfinite(value)


def _problem(f: dataclasses.Field, raw: Any) -> str | None:
    """What is wrong with ``raw`` for the key ``f``, or None."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    m = f.metadata
    if kind == "bool":
        return None if isinstance(raw, bool) else "must be true or false"
    if kind == "str":
        if not isinstance(raw, str) or (m["choices"] and raw not in m["choices"]):
            return "must be one of " + ", ".join(f'"{c}"' for c in m["choices"])
        return None
    if kind.startswith("tuple"):
        integer = "int" in kind
        noun = "whole numbers" if integer else "numbers"
        if not isinstance(raw, list) or not all(_number(v, integer) for v in raw):
            return f"must be a list of {noun}"
        bad = [v for v in raw if _bound_problem(m, v)]
        return f"{_show(bad[0])} {_bound_problem(m, bad[0])}" if bad else None
    integer = kind == "int"
    if not _number(raw, integer):
        return "must be a whole number" if integer else "must be a number"
    return _bound_problem(m, raw)


def _bound_problem(m, v) -> str | None:
    if m["above"] is not None and not v > m["above"]:
        return f"must be above {m['above']}"
    if m["lo"] is not None and v < m["lo"]:
        return f"must be at least {m['lo']}"
    if m["hi"] is not None and v > m["hi"]:
        return f"must be at most {m['hi']}"
    return None
