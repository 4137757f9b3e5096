"""What a canary's guardrails decide at each tick, from its stats and production's.

Pure and deterministic: the deployment service owns the clock, the stats and the transaction,
and calls ``evaluate`` every tick with the canary's stats since its current share started
(``evaluate_slots``: the step or bake counts the stats slices that start at or after that
moment; the alarms read the slice it began in too).
The decision is one of ``vocabulary.GUARDRAIL_STATES``:

- ``rollback``: an alarm holds; the canary goes to 0% at once. The alarm says which metric,
  its value and the threshold, as one sentence for the audit row and the events.
- ``baking``: no alarm, but too little traffic or time yet (``missing`` says how much).
- ``step_up``: the current step held clean for ``step_seconds``; ``percent`` is the next step.
- ``paused``: the canary's share is 0% beside production (an admin's, a watch's
  ``pause_canary``): never stepped up or ready to promote; its alarms still apply.
- ``promote_ready``: the last step baked clean for ``bake_seconds`` over ``min_requests``.
  Promotion still needs its sign-offs; the alarms keep applying until it happens.

Alarms (in this order; each needs ``min_requests`` canary requests first, except a canary
whose errors already exceed ``max_error_rate`` of ``min_requests``, which no later success can
bring back under the threshold):

- error rate above ``max_error_rate`` (and, when production fails requests too over the same
  span, above production's by more than chance explains at ``live_confidence``: its clients'
  unusable inputs are not the canary's fault);
- p99 above ``max_p99_ratio`` times production's, by more than ``p99_slack_ms``; while
  traffic is thin the tail compared is the highest quantile with ``TAIL`` requests above it
  (p90 at 100 requests, p99 from 1000), as one slow request is not a p99;
- PSI of predictions against production's above ``max_psi`` (scores if both record them,
  else classes; score bins keep 20 predictions each, see ``stats.prediction_psi``);
- live performance below ``min_live_metric_ratio`` of production's, once both sides have
  ``min_labels`` labels, and by more than label noise explains at ``live_confidence``.

The comparisons need production's stats over the same span; without a production (a first
deployment) or with fewer than ``min_requests`` there, only the error rate applies.

``shadow_report`` judges a shadow (mirrored traffic) the same way before its canary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from statistics import NormalDist

from ..deploy_policy import DeployPolicy
from ..drift import live_ratio, significantly_worse
from ..vocabulary import SHADOW_GATES
from .stats import StatsBook, WindowStats, counted_from, prediction_psi


@dataclass(frozen=True)
class Alarm:
    """One guardrail crossed: its metric, value, the policy's threshold, and a sentence for
    people (the rollback's reason in the audit row and the events)."""

    metric: str  # a key of vocabulary.ALARMS
    value: float
    threshold: float
    sentence: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Decision:
    """What the deployment service should do now. ``percent`` is the canary's share to set
    (0 on rollback); ``step`` the index of that share in the policy's schedule."""

    state: str  # a key of vocabulary.GUARDRAIL_STATES
    percent: float
    step: int
    reason: str  # one sentence: the alarm's on rollback
    alarm: Alarm | None = None
    alarms: tuple[Alarm, ...] = ()
    missing: dict = field(default_factory=dict)  # {"requests": n, "seconds": s} while baking
    metrics: dict = field(default_factory=dict)  # every value computed, for the panel

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["alarm"] = self.alarm.to_dict() if self.alarm else None
        d["alarms"] = [a.to_dict() for a in self.alarms]
        return d


def _policy(policy) -> DeployPolicy:
    """A ``DeployPolicy``, or a whole ``Policy`` (its ``deploy``)."""
    return getattr(policy, "deploy", policy)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _num(x: float) -> str:
    return f"{x:.3g}"


def _live_metric(canary: WindowStats, d: DeployPolicy) -> str:
    if d.live_metric != "auto":
        return d.live_metric
    return "accuracy" if canary.classes else "mae"


TAIL = 10  # requests above the tail quantile compared, at least (p99 needs 1000)


def tail_quantile(n: int) -> float:
    """The latency quantile compared on ``n`` requests: p99, or while traffic is thin the
    highest quantile with ``TAIL`` requests above it (p90 at 100), never below the median."""
    return max(0.5, min(0.99, 1 - TAIL / n)) if n else 0.99


def alarms(canary: WindowStats, production: WindowStats | None, policy) -> tuple[tuple, dict]:
    """Every alarm that holds now, in order, and the values computed (``metrics``)."""
    d = _policy(policy)
    metrics: dict = {
        "requests": canary.count,
        "errors": canary.errors,
        "error_rate": canary.error_rate,
        "production_requests": production.count if production is not None else 0,
    }
    base = production if production is not None and production.count >= d.min_requests else None
    found = [_error_alarm(canary, base, d, metrics)]
    if canary.count >= d.min_requests and base is not None:
        found += [
            _latency_alarm(canary, base, d, metrics),
            _psi_alarm(canary, base, d, metrics),
            _live_alarm(canary, base, d, metrics),
        ]
    return tuple(a for a in found if a is not None), metrics


def _error_alarm(canary: WindowStats, base, d: DeployPolicy, metrics: dict) -> Alarm | None:
    rate = canary.error_rate
    if rate is None or rate <= d.max_error_rate:
        return None
    if canary.count < d.min_requests and canary.errors <= d.max_error_rate * d.min_requests:
        return None  # too little traffic, and later successes could still dilute it
    theirs = ""
    if base is not None and base.errors:
        # Production fails requests too (clients sending what no model takes): the canary
        # alarms only when it fails more often than production, beyond chance.
        metrics["production_error_rate"] = base.error_rate
        if not _fails_more(canary, base, NormalDist().inv_cdf(d.live_confidence)):
            return None
        theirs = f", and above production's {_pct(base.error_rate)}"
    return Alarm(
        "error_rate",
        rate,
        d.max_error_rate,
        f"Canary error rate {_pct(rate)} ({canary.errors} of {canary.count} requests) "
        f"is above max_error_rate {_pct(d.max_error_rate)}{theirs}.",
    )


def _fails_more(canary: WindowStats, base: WindowStats, z: float) -> bool:
    """A one-sided two-proportion test: the canary's error rate above production's by more
    than ``z`` standard errors (pooled)."""
    pooled = (canary.errors + base.errors) / (canary.count + base.count)
    se = math.sqrt(pooled * (1 - pooled) * (1 / canary.count + 1 / base.count))
    return canary.error_rate - base.error_rate > z * se


def _latency_alarm(canary, base, d: DeployPolicy, metrics: dict) -> Alarm | None:
    q = tail_quantile(min(canary.count, base.count))
    mine, theirs = canary.latency_quantile(q), base.latency_quantile(q)
    name = f"p{q * 100:.3g}"
    metrics.update(tail_quantile=q, p99_ms=mine, production_p99_ms=theirs)
    if mine is None or not theirs:
        return None
    ratio = metrics["p99_ratio"] = mine / theirs
    if ratio <= d.max_p99_ratio or mine - theirs <= d.p99_slack_ms:
        return None
    return Alarm(
        "p99_ratio",
        ratio,
        d.max_p99_ratio,
        f"Canary {name} latency {_num(mine)} ms is {ratio:.2f} times production's "
        f"{_num(theirs)} ms, above max_p99_ratio {d.max_p99_ratio:g}.",
    )


def _psi_alarm(canary, base, d: DeployPolicy, metrics: dict) -> Alarm | None:
    value, on = prediction_psi(canary, base)
    metrics.update(psi=value, psi_on=on)
    if value is None or value <= d.max_psi:
        return None
    return Alarm(
        "psi",
        value,
        d.max_psi,
        f"Canary predictions shifted against production's: PSI on {on} {value:.3f} "
        f"is above max_psi {d.max_psi:g}.",
    )


def _live_alarm(canary, base, d: DeployPolicy, metrics: dict) -> Alarm | None:
    metric = _live_metric(canary, d)
    mine, theirs = canary.live_moments(metric), base.live_moments(metric)
    value, base_value = canary.live(metric), base.live(metric)
    labels = min(mine[2] if mine else 0, theirs[2] if theirs else 0)
    ratio = live_ratio(value, base_value, metric) if labels >= d.min_labels else None
    metrics.update(
        live_metric=metric,
        live=value,
        production_live=base_value,
        labels=labels,
        live_metric_ratio=ratio,
    )
    if ratio is None or ratio >= d.min_live_metric_ratio:
        return None
    z = NormalDist().inv_cdf(d.live_confidence)
    if not significantly_worse(mine[:2], theirs[:2], metric, d.min_live_metric_ratio, z):
        return None  # below the line, but within what label noise explains
    return Alarm(
        "live_metric_ratio",
        ratio,
        d.min_live_metric_ratio,
        f"Canary live {metric} {_num(value)} over {mine[2]} labels is {ratio:.2f} times "
        f"production's {_num(base_value)}, below min_live_metric_ratio "
        f"{d.min_live_metric_ratio:g}.",
    )


def seconds(t: float | str | datetime) -> float:
    """Epoch seconds from a number, a datetime or an ISO 8601 string (the stores' ``since``)."""
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t.timestamp() if isinstance(t, datetime) else float(t)


def current_step(percent: float | None, policy) -> int:
    """The index in the policy's schedule of the canary's current share (the nearest step at
    or below it; 0 when not given or below the first)."""
    schedule = _policy(policy).schedule
    if percent is None:
        return 0
    below = [i for i, p in enumerate(schedule) if p <= percent + 1e-9]
    return below[-1] if below else 0


def evaluate(
    canary_stats: WindowStats,
    production_stats: WindowStats | None,
    policy,
    now: float | str | datetime,
    started_at: float | str | datetime,
    *,
    percent: float | None = None,
    baked: WindowStats | None = None,
) -> Decision:
    """The guardrails' decision for a canary at ``now``.

    ``canary_stats``: the canary's stats since ``started_at``, when it took its current share
    ``percent`` (the first step's when None). ``production_stats``: production's over the same
    span, or None. ``baked``: the canary's stats the step or bake counts, when they begin
    later than what the alarms read (``evaluate_slots``). ``policy``: a ``DeployPolicy`` or a
    ``Policy``. Times are epoch seconds, datetimes or ISO strings (a deployments row's
    ``since``)."""
    d = _policy(policy)
    now, started_at = seconds(now), seconds(started_at)
    baked = canary_stats if baked is None else baked
    schedule = d.schedule
    step = current_step(percent, d)
    share = schedule[step] if percent is None else percent
    found, metrics = alarms(canary_stats, production_stats, d)
    elapsed = now - started_at  # below 0 until a bake's first whole slice (evaluate_slots)
    metrics["elapsed_seconds"] = max(0.0, elapsed)
    if found:
        return Decision("rollback", 0.0, step, found[0].sentence, found[0], found, metrics=metrics)
    metrics["requests"] = baked.count
    if share <= 0:  # paused (an admin's share, a watch's pause_canary): it stays so
        return Decision(
            "paused",
            0.0,
            step,
            "Paused at 0%: no step and no bake until its share is set again; the bake then "
            "starts from the beginning.",
            metrics=metrics,
        )
    last = step == len(schedule) - 1
    hold = d.bake_seconds if last else d.step_seconds
    missing = {}
    if baked.count < d.min_requests:
        missing["requests"] = d.min_requests - baked.count
    if elapsed < hold:
        missing["seconds"] = math.ceil(hold - elapsed)
    if missing:
        todo = " and ".join(
            [f"{n} more request{'s' * (n != 1)}" for n in [missing.get("requests")] if n]
            + [f"{n} s more" for n in [missing.get("seconds")] if n]
        )
        what = "Baking" if last else f"Step {step + 1} of {len(schedule)}"
        return Decision(
            "baking",
            share,
            step,
            f"{what} at {share:g}%: {todo} before a decision.",
            missing=missing,
            metrics=metrics,
        )
    if not last:
        nxt = schedule[step + 1]
        return Decision(
            "step_up",
            nxt,
            step + 1,
            f"Step {step + 1} of {len(schedule)} held clean at {share:g}% for "
            f"{elapsed:.0f} s over {baked.count} requests; next {nxt:g}%.",
            metrics=metrics,
        )
    return Decision(
        "promote_ready",
        share,
        step,
        f"Clean bake: {elapsed:.0f} s at {share:g}% over {baked.count} requests with "
        "no alarm; ready to promote once signed off.",
        metrics=metrics,
    )


@dataclass(frozen=True)
class ShadowReport:
    """How a shadow compares with production on mirrored traffic.

    ``gates``: the policy makes this report gate the canary (``shadow`` and ``shadow_gate``).
    ``ready``: enough mirrored requests to judge. ``passed``: ready and every gate holds (None
    until ready). ``failures`` lists the gates that do not hold, as sentences."""

    requests: int
    agreement: float | None
    psi: float | None
    psi_on: str | None
    p99_ratio: float | None
    gates: bool
    ready: bool
    passed: bool | None
    reason: str
    failures: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["failures"] = list(self.failures)
        return d


def shadow_report(candidate: WindowStats, production: WindowStats, policy) -> ShadowReport:
    """Judge a shadow: class agreement on paired requests (``min_agreement``), PSI of its
    predictions against production's (``max_shadow_psi``) and its p99 against production's
    (``max_p99_ratio``, with ``p99_slack_ms``), once it has ``min_requests`` mirrored
    requests."""
    d = _policy(policy)
    agreement = candidate.agreement
    value, on = prediction_psi(candidate, production)
    q = tail_quantile(min(candidate.count, production.count))
    p99, base_p99 = candidate.latency_quantile(q), production.latency_quantile(q)
    ratio = p99 / base_p99 if p99 is not None and base_p99 else None
    ready = candidate.count >= d.min_requests and production.count >= d.min_requests
    failures = []
    if agreement is not None and agreement < d.min_agreement:
        failures.append(
            f"Shadow agrees with production on {_pct(agreement)} of {candidate.paired} "
            f"mirrored requests, below min_agreement {_pct(d.min_agreement)}."
        )
    if value is not None and value > d.max_shadow_psi:
        failures.append(
            f"Shadow predictions shifted against production's: PSI on {on} {value:.3f} is "
            f"above max_shadow_psi {d.max_shadow_psi:g}."
        )
    if ratio is not None and ratio > d.max_p99_ratio and p99 - base_p99 > d.p99_slack_ms:
        failures.append(
            f"Shadow p{q * 100:.3g} latency {_num(p99)} ms is {ratio:.2f} times production's "
            f"{_num(base_p99)} ms, above max_p99_ratio {d.max_p99_ratio:g}."
        )
    if not ready:
        need = max(0, d.min_requests - candidate.count)
        passed, reason = (
            None,
            (
                f"Shadowing: {need} more mirrored requests before a verdict."
                if need
                else f"Shadowing: production needs {d.min_requests} requests in the window."
            ),
        )
    elif failures:
        passed, reason = False, failures[0]
    else:
        checked = ", ".join(
            SHADOW_GATES[k]
            for k, v in (("agreement", agreement), ("psi", value), ("p99_ratio", ratio))
            if v is not None
        )
        passed, reason = (
            True,
            (f"Shadow matches production over {candidate.count} mirrored requests ({checked})."),
        )
    return ShadowReport(
        requests=candidate.count,
        agreement=agreement,
        psi=value,
        psi_on=on,
        p99_ratio=ratio,
        gates=d.shadow and d.shadow_gate,
        ready=ready,
        passed=passed,
        reason=reason,
        failures=tuple(failures) if ready else (),
    )


def evaluate_slots(
    book: StatsBook,
    model: str,
    canary: int,
    production: int | None,
    policy,
    *,
    now: float | str | datetime,
    started_at: float | str | datetime,
    percent: float | None = None,
) -> Decision:
    """``evaluate`` on a ``StatsBook``: the canary version's ``canary`` slot and the production
    version's ``production`` slot since ``started_at``. The step or bake that began then counts
    from the first slice starting at or after it (``stats.counted_from``), its time as well as
    its requests, so nothing from before makes it pass; the alarms read from the slice holding
    ``started_at`` (that version's requests in that slot: an error is never left out). The
    book's ``window_seconds`` must cover the longest step or bake, or the oldest traffic falls
    out of the decision."""
    now, started_at = seconds(now), seconds(started_at)
    start = counted_from(started_at, book.slice_seconds)
    held = start if start == started_at else start - book.slice_seconds  # its slice's start
    baked = book.window(model, canary, "canary", now, since=start)
    mine = baked
    if held < start and held <= now:  # the alarms' too: the slice it began in, added once
        mine = WindowStats().merge(baked).merge(book.window(model, canary, "canary", held, held))
    theirs = (
        book.window(model, production, "production", now, since=held)
        if production is not None
        else None
    )
    return evaluate(mine, theirs, policy, now, start, percent=percent, baked=baked)


def shadow_slots(
    book: StatsBook,
    model: str,
    shadow: int,
    production: int,
    policy,
    *,
    now: float | str | datetime,
    since: float | str | datetime,
) -> ShadowReport:
    """``shadow_report`` on a ``StatsBook``: the ``shadow`` slot against ``production``, from
    the first slice starting at or after ``since`` (``stats.counted_from``)."""
    now, since = seconds(now), seconds(since)
    return shadow_report(
        book.window(model, shadow, "shadow", now, since=since),
        book.window(model, production, "production", now, since=since),
        policy,
    )
