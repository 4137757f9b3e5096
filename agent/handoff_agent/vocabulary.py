"""The words the agent, the notebook side and the panel share, defined once.

Metric directions, statuses, the stage flow and the comparison rules. Plain literals and no
imports, so the notebook extension's cold path and the check worker may import it. The panel
reads the same values from ``GET /api/v1/meta`` (``meta``), never its own copy.
"""

from __future__ import annotations

# -- metrics ---------------------------------------------------------------------------------
# True when a higher value is better. A metric not named here gets no direction (no colour,
# never a champion rule).
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "f1": True,
    "roc_auc": True,
    "precision": True,
    "recall": True,
    "balanced_accuracy": True,
    "r2": True,
    "log_loss": False,
    "mae": False,
    "rmse": False,
    "mse": False,
    "p50_ms": False,
    "p99_ms": False,
    "throughput_rows_per_s": True,
    "serialized_mb": False,
    "peak_memory_mb": False,
    "dp_diff": False,
    "eo_diff": False,
}
LOWER_IS_BETTER = frozenset(k for k, up in HIGHER_IS_BETTER.items() if not up)

# -- statuses ----------------------------------------------------------------------------------
CHECK_STATUSES = ("pass", "warn", "fail", "error", "skip")  # what a check returns
CHECK_RUN_STATES = ("queued", "running")  # a check run not finished yet
VERDICTS = ("pass", "warn", "fail")
# A version's status: pushed (no checks), checking, then its verdict's past tense.
VERDICT_STATUS = {"pass": "passed", "warn": "warned", "fail": "failed"}
STATUS_VERDICT = {status: verdict for verdict, status in VERDICT_STATUS.items()}
VERDICT_WORDS = {"pass": "passed", "warn": "passed with warnings", "fail": "failed"}  # for people
VERSION_STATUSES = ("pushed", "checking", *VERDICT_STATUS.values())
# The provisional verdict: while a version is still ``checking``, its ``provisional`` field holds
# the gate's verdict over the checks in so far, once these (run first) are in. The final verdict
# replaces it (the field goes back to null); nothing (a hand-off, a stage) acts on it.
PROVISIONAL_FIELD = "provisional"
PROVISIONAL_CHECKS = ("loads", "smoke", "performance")
PROVISIONAL_WORDS = {"pass": "passing so far", "warn": "warning so far", "fail": "failing so far"}

# -- stages ------------------------------------------------------------------------------------
FLOW = ("received", "validated", "approved", "canary", "production", "archived")
TERMINAL = frozenset({"archived", "rejected", "rollback"})
# Stages only the agent itself enters (intake and central's checks), never a sign-off.
AGENT_STAGES = ("received", "validated", "rejected", "needs_trust")
STAGE_ALIASES = {"prod": "production"}
STAGES = tuple(dict.fromkeys((*FLOW, *AGENT_STAGES, *sorted(TERMINAL))))  # every stage, once
ROLLBACK_FROM = "production"  # the one stage an admin may roll back
# Stages that stop a version, whose reason (the reviewer's or the guardrails' comment) the
# analyst must read: ``stage_text`` says it, and the panel shows it prominently.
STOPPED_STAGES = ("rejected", "rollback")

# -- deployments -------------------------------------------------------------------------------
# A model's endpoint has these slots (serving); test is reachable only by version, previous
# is the last production kept loaded as the rollback target.
SLOTS = ("production", "canary", "shadow", "test", "previous")
# A canary's share of its model's traffic, in percent, from the least to the most: central
# refuses another (serving/deploy.py), and the CLI says so before it asks.
TRAFFIC_SHARE = (0, 100)


def traffic_share_problem(percent: float) -> str | None:
    """Why ``percent`` is no traffic share, or None."""
    low, high = TRAFFIC_SHARE
    if low <= percent <= high:
        return None
    return f"A traffic share is between {low:g} and {high:g}, not {percent:g}."


# The stages in which a slot may hold a version (serving/deploy.py fills the slots): where the
# notebook asks central where a version serves.
DEPLOYED_STAGES = FLOW[1:5]
# What the guardrails decide at each tick (serving/guardrails.py), in the words the panel shows.
GUARDRAIL_STATES = {
    "baking": "baking",
    "paused": "paused at 0%",
    "step_up": "next step",
    "promote_ready": "ready to promote",
    "rollback": "rolled back",
}
# Each alarm's metric and what it measures, for people (events, audit, the panel).
ALARMS = {
    "error_rate": "error rate",
    "p99_ratio": "p99 latency against production",
    "psi": "prediction shift against production (PSI)",
    "live_metric_ratio": "live performance against production",
}
# Who may take each deployment action (the routes' roles, served in /meta so the panel offers
# only what the caller may do): a stage change (start canary, promote), the canary's share, and
# the one-step rollback. Sign-offs follow the stage flow's roles instead.
DEPLOY_ACTIONS = {
    "transition": ("admin",),
    "traffic": ("admin",),
    "rollback": ("admin",),
}
# The events that change what the deployment view shows (a stage, the traffic, a guardrail's
# decision, a validation, a monitor's alert): GET /api/v1/models/{name}/deployment/events.
DEPLOY_EVENTS = ("stage", "deployment", "guardrail", "validation", "alert")
# What gates a canary after shadowing: the shadow report's checks.
SHADOW_GATES = {
    "agreement": "class agreement with production",
    "psi": "prediction shift against production (PSI)",
    "p99_ratio": "p99 latency against production",
}

# -- watched data sources ---------------------------------------------------------------------
# How a source's new fingerprint differs from the one before (watch/classify.py decides).
SOURCE_CHANGES = {
    "first": "first fingerprint",
    "unchanged": "unchanged",
    "appended": "rows appended",
    "modified": "content changed, same schema, no shift",
    "schema": "schema change",
    "drift": "distribution shift (PSI above the threshold)",
    "overdue": "no update in the expected period",
}
# What ``--on`` accepts, and the changes each word covers.
WATCH_ON = {
    "change": ("appended", "modified", "schema", "drift"),
    "schema": ("schema",),
    "drift": ("drift",),
    "overdue": ("overdue",),
}
# What a trigger can do. A retrain never follows a schema change or an overdue source: the
# notebook would train on data it was not written for, or on nothing new; a person looks first.
WATCH_ACTIONS = ("alert", "revalidate", "retrain", "pause_canary", "rollback_canary")
# The keys of a watch (a policy's [[watch]] table, the API's body): a misspelt one would be
# dropped, its setting silently left at the default, so a [[watch]] with another is refused.
WATCH_KEYS = (
    *("model", "source", "query", "every", "overdue", "on", "actions", "run", "params"),
    *("timeout", "target"),
)
NO_RETRAIN_ON = frozenset({"schema", "overdue"})
# How the model server's log says a request failed in the model, not in the client's input:
# the guardrails and the monitor count these as errors (and 5xx), never a client's 4xx.
MODEL_REFUSED = "The model refused this input: "
# A trigger's states. Pending: owed by its snapshot (stored with it), not yet carried out.
# Interrupted: a retrain whose agent stopped (or was killed) while its notebook ran, or a
# revalidation while its checks ran; owed once more (watch/service.py: interrupted_retrains,
# store/watches.py: revalidations_interrupted).
TRIGGER_STATES = ("pending", "running", "done", "failed", "skipped", "interrupted")


def owed_again(detail: dict) -> bool:
    """Whether a trigger its agent's stop cut short runs once more (a retrain, a revalidation):
    not when it was a re-run already (its detail says ``retry_of``), so none loops forever."""
    return "retry_of" not in detail


# A revalidation re-runs a version's checks on the source's rows: after a schema change the
# model cannot take them (the loads/schema checks would only say so), and an overdue source
# has no new rows. Appended, modified and drifted data are what it is for.
NO_REVALIDATE_ON = frozenset({"schema", "overdue"})
# A trigger's change when central's monitor asked for the retrain (an alert whose
# [monitor.actions] action is retrain, audit monitor.retrain_requested), not the source.
MONITOR_ALERT = "monitor_alert"

# -- requests ----------------------------------------------------------------------------------
JSON_BODY_LIMIT = 1 << 20  # bytes a JSON request body may hold (the streaming routes take more)

# -- comparison --------------------------------------------------------------------------------
LATENCY_METRICS = ("p50_ms", "p99_ms", "throughput_rows_per_s", "serialized_mb")
FAIRNESS_METRICS = ("dp_diff", "eo_diff")
# What a comparison never shows as a version's metric: how a check ran (the rows it sampled,
# its shuffles, what its budget cut) and a check's own comparison with its champion.
NOT_METRICS = ("rows", "n_repeats", "budgeted", "screened", "scored")
NOT_METRIC_AFFIXES = {"prefixes": ("champion_", "delta_"), "suffixes": ("_ci",)}


def is_metric(key: str) -> bool:
    """Whether a check's result key is a metric of the version (not a counter of the run)."""
    return not (
        key in NOT_METRICS
        or key.startswith(NOT_METRIC_AFFIXES["prefixes"])
        or key.endswith(NOT_METRIC_AFFIXES["suffixes"])
    )


BETTER_COLOUR, WORSE_COLOUR = "#1a7f37", "#cf222e"


def better(metric: str, new: float, old: float) -> bool | None:
    """Whether ``new`` improves on ``old`` for ``metric``; None when its direction is unknown
    or the values are equal."""
    up = HIGHER_IS_BETTER.get(metric)
    if up is None or new == old:
        return None
    return (new > old) == up


def verdict_of(version: dict) -> str:
    """A version's verdict word (pass/warn/fail), else its status as it is."""
    verdict = (version.get("verdict") or {}).get("verdict")
    return verdict or STATUS_VERDICT.get(version.get("status"), version.get("status") or "unknown")


def stage_text(version: dict) -> str:
    """'approved by bob'; for a stopped version, why: 'rejected by rita: the fairness gap on
    gender is too high'. Reads a versions list row (``stage_by``, ``stage_comment``) or a
    version's detail (its ``stages`` history), so every view says it the same way."""
    stage = version.get("stage") or ""
    last = (version.get("stages") or [{}])[-1]
    last = last if last.get("stage") == stage else {}
    by = version.get("stage_by") or last.get("by")
    comment = (version.get("stage_comment") or last.get("comment") or "").strip()
    said = f"{stage} by {by}" if stage and by else stage
    if stage in STOPPED_STAGES and comment:
        said += f": {comment}"
    return said


def missing_text(missing: dict[str, int]) -> str:
    """The sign-offs a version still needs, for people: '1 risk, 2 reviewer'."""
    return ", ".join(f"{n} {role}" for role, n in missing.items())


def pruned_text(when: str | None) -> str:
    """A version whose bundle retention removed (``pruned``: when), for people."""
    return f"bundle pruned on {when[:10]}" if when else ""


MAX_KEEP = 1_000_000  # most versions a prune keeps per model (an API bound, not a default)


def prune_line(out: dict) -> str:
    """What ``POST …/prune`` did, or would do, in one line: the shell's and the notebook's."""
    model, numbers = out["model"], out["pruned"]
    if not numbers:
        return f"{model}: nothing to prune (keeps the newest {out['keep']} and what is in use)."
    verb = "would prune" if out["dry_run"] else "pruned"
    which = f"version{'s' * (len(numbers) > 1)} {', '.join(map(str, numbers))}"
    return f"{model}: {verb} {which}, {size_text(out['freed'])}."


PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# ``fsck --sweep``'s default grace: far past any upload, conversion or replica's write
SWEEP_GRACE = "24h"


def period_seconds(text, unit: bool = False) -> float | None:
    """A period as people write it (``30s``, ``15m``, ``1h``, ``1d``, or a bare number of
    seconds) in seconds; None when it is none of these. A number passes as it is. ``unit``:
    a bare number other than 0 is none either (``--expires 10`` reads as days to some)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return None if unit and text else float(text)
    text = str(text).strip()
    suffix = PERIOD_UNITS.get(text[-1:])
    if unit and not suffix and text.strip("0") not in ("", "."):
        return None
    number = text[:-1].strip() if suffix else text
    whole, _, fraction = number.partition(".")
    if not whole or not all(c in "0123456789" for c in whole + fraction):
        return None
    if "." in number and not fraction:
        return None
    return float(number) * (suffix or 1)


# URL schemes a watch is sometimes given that name no database (a web or bucket file)
NOT_SQL_SCHEMES = ("http", "https", "ftp", "s3", "gs")


def param_value(text: str):
    """A retrain parameter given as ``K=V`` (``%mlops watch --param``, ``jupyter handoff
    watch --params``), as the notebook would write it: ``3`` an int (``range(epochs)``
    works), ``0.1`` a float, anything else (``nan`` too: no such name there) the text."""
    import math

    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        return value if math.isfinite(value) else text
    return text


def period_text(seconds: float) -> str:
    """A period as people write it, in its largest whole unit: 3600 is ``1h``, 93600
    ``26h``, 172800 ``2d``, 90 ``90s`` (what ``--every 1h`` was given as, not ``3600s``)."""
    for unit, size in sorted(PERIOD_UNITS.items(), key=lambda u: -u[1]):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def watch_trigger_text(trigger: dict | None) -> str:
    """``revalidate done: warn``: a watch's last trigger, its action and how it ended."""
    if not trigger:
        return ""
    if trigger.get("change") == "error":  # the source is unreadable: the line says why
        return "alerted" if trigger["state"] == "done" else ""
    how = trigger.get("verdict") or trigger.get("error") or trigger.get("why")
    return f"{trigger['action']} {trigger['state']}" + (f": {how}" if how else "")


def watch_last_text(w: dict) -> str:
    """A watch's last change with its fingerprint, or why its source cannot be read."""
    last = w.get("last") or {}
    if w.get("error"):  # unreadable since its last good fingerprint
        return f"error since {when_text(w['error_since'])}: {w['error']}"
    if last.get("error") and not last.get("change"):
        return f"error: {last['error']}"
    fingerprint = str(last.get("fingerprint") or "")[:12]
    return " ".join(filter(None, (last.get("change"), fingerprint)))


WATCH_CHANGE_TEXT = {
    "appended": "has new rows",
    "modified": "was rewritten",
    "schema": "changed its schema",
    "overdue": "is overdue: no new data for longer than its overdue period",
}


def watch_alert_text(event: dict) -> str:
    """A watch alert as one sentence, for the people its webhook reaches (a team's chat), as
    a monitor alert's ``message`` is: ``churn: /data/events.csv has new rows (appended).``"""
    head = f"{event['model']}: {event['source']}"
    change = event.get("change")
    if change == "error":
        return f"{head} cannot be read since {when_text(event.get('since'))}: {event.get('error')}"
    if change == "drift":
        psi = event.get("psi")
        moved = f" (PSI {psi:.2f})" if isinstance(psi, (int, float)) else ""
        return f"{head} drifted from the model's reference data{moved}."
    return f"{head} {WATCH_CHANGE_TEXT.get(change, 'changed')} ({change})."


def watch_line(w: dict) -> str:
    """One watched source in one line, the shell's (``jupyter handoff watch``) and the
    notebook's (``%mlops watch``): ``[3] churn <- /data/*.csv every 1h on change ->
    alert,retrain: appended 1b959318dec0; retrain done``."""
    late = f" overdue after {period_text(w['overdue'])}" if w.get("overdue") else ""
    outcome = watch_trigger_text(w.get("last_trigger"))
    return (
        f"[{w['id']}] {w['model']} <- {w['source']} every {period_text(w['every'])}{late} "
        f"on {','.join(w['on'])} -> {','.join(w['actions'])}: "
        f"{watch_last_text(w) or 'not yet'}" + (f"; {outcome}" if outcome else "")
    )


def when_text(iso: str | None, never: str = "never") -> str:
    """A stored time for people, to the second: 2026-12-07T10:22:20Z. Every message that
    shows a time uses it, so none prints microseconds and an offset."""
    if not iso:
        return never
    from datetime import UTC, datetime

    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def table_time(iso: str | None) -> str:
    """A stored time in a table's column (``%mlops history``, ``%mlops versions``), to the
    second: ``2026-12-07 10:22:20``; the API keeps the full time."""
    return (iso or "")[:19].replace("T", " ")


def rows_text(n: int) -> str:
    """A count of rows for people: 1 row, 2,000 rows."""
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def size_text(n: int) -> str:
    """Bytes for people: 12 KiB, 3.4 MiB, 1.2 GiB."""
    if n < 2**20:
        return f"{n / 2**10:,.0f} KiB"
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.1f} GiB"


def signoff_to(stage: str | None, stages: dict[str, dict[str, int]]) -> str | None:
    """Where reviewers' sign-offs (or an admin's promotion) move a version in ``stage``: the
    next stage of the flow, if the policy's ``stages`` table names sign-offs for it. None:
    no sign-off applies (received, a terminal stage, production, whose next is archived)."""
    if stage not in FLOW or stage == FLOW[0] or stage == FLOW[-1]:
        return None
    nxt = FLOW[FLOW.index(stage) + 1]
    return nxt if nxt in stages else None


def stage_flow(stages: dict[str, dict[str, int]]) -> list[dict]:
    """The stage flow with the sign-offs each stage needs (role -> count), from a policy's
    ``stages`` table. ``next`` follows the flow; ``signoff_to`` is where reviewers' sign-offs
    (or an admin's promotion) move a version on: a next stage the policy names sign-offs for."""
    out = []
    for i, name in enumerate(FLOW):
        nxt = FLOW[i + 1] if i + 1 < len(FLOW) else None
        out.append(
            {
                "name": name,
                "signoffs": dict(stages.get(name, {})),
                "next": nxt,
                "signoff_to": signoff_to(name, stages),
                "by_agent": name in AGENT_STAGES,
            }
        )
    return out


def meta(
    stages: dict[str, dict[str, int]],
    *,
    role: str,
    policy: str,
    deploy: dict | None = None,
    monitor: dict | None = None,
    alerts: dict | None = None,
) -> dict:
    """The whole vocabulary as JSON, as ``GET /api/v1/meta`` serves it. ``policy`` says where
    the stage flow's sign-offs come from ("central" policy file, or the "default");
    ``deploy`` is that policy's ``[deploy]`` keys (``DeployPolicy.describe()``), ``monitor`` its
    ``[monitor]`` keys and ``alerts`` the alert words (``monitor_policy.describe_alerts()``)."""
    return {
        "role": role,
        "metrics": {"higher_is_better": dict(HIGHER_IS_BETTER)},
        "statuses": {
            "check": list(CHECK_STATUSES),
            "check_running": list(CHECK_RUN_STATES),
            "verdicts": list(VERDICTS),
            "version": list(VERSION_STATUSES),
            "verdict_status": dict(VERDICT_STATUS),
            "verdict_words": dict(VERDICT_WORDS),
            "provisional": {
                "field": PROVISIONAL_FIELD,
                "checks": list(PROVISIONAL_CHECKS),
                "words": dict(PROVISIONAL_WORDS),
            },
        },
        "stages": {
            "policy": policy,
            "flow": stage_flow(stages),
            "terminal": sorted(TERMINAL),
            "rollback_from": ROLLBACK_FROM,
            "stopped": list(STOPPED_STAGES),
            "aliases": dict(STAGE_ALIASES),
        },
        "deploy": {
            "slots": list(SLOTS),
            "guardrail_states": dict(GUARDRAIL_STATES),
            "alarms": dict(ALARMS),
            "shadow_gates": dict(SHADOW_GATES),
            "actions": {k: list(v) for k, v in DEPLOY_ACTIONS.items()},
            "policy": deploy or {},
        },
        "monitor": {"policy": monitor or {}, **(alerts or {})},
        "comparison": {
            "latency": list(LATENCY_METRICS),
            "fairness": list(FAIRNESS_METRICS),
            "not_metrics": list(NOT_METRICS),
            "not_metric_affixes": {k: list(v) for k, v in NOT_METRIC_AFFIXES.items()},
            "better_colour": BETTER_COLOUR,
            "worse_colour": WORSE_COLOUR,
        },
    }
