"""The monitor service: for each monitored model, the windows that closed since the last run,
their numbers stored as a time series, alerts fired and cleared, and the policy's actions.

``run(model, now)`` takes the time as an argument, so tests and ``jupyter handoff monitor
run --now`` replay days in seconds (labels count only once they arrived by ``now``). The
agent's loop calls it every ``[monitor] every_seconds`` with the clock.

A window's traffic, drift, prediction drift and label-free estimate are judged once, when it
closes; its labelled performance when its label delay has passed and at least
``min_labels`` labels arrived (it keeps waiting up to ``label_wait_days``). A window below
``min_samples`` never alerts and records why. A window whose log gained records after it was
judged (a late import, a segment flushed after it closed, a replay's ``--now`` ahead of the
log) is judged again, whole. Alerts are per model, kind and window kind, with hysteresis
(``[monitor] fire_after``, ``clear_after``, ``clear_margin``; the rule is
``MonitorPolicy.decide``): crossing windows fire one (unless it already fires), windows back
inside the threshold by the clear margin clear it, unless older than the window that fired it.

A log segment whose stored bytes are bad (they no longer match their digest, or they are no
Parquet) is quarantined once: one warning line, an audit row ``monitor.segment_quarantined``,
and every run goes on without it (``skipped`` in the run's answer, ``skipped_segments`` in the
windows it overlaps). A store out of reach, or a blob missing (more likely a store pointed at
the wrong place than a lost segment: quarantining would drop every segment), is no quarantine:
the run fails, saying so, and the next one tries again.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import numpy as np

from ..bundle import read_members
from ..errors import HandoffError
from ..manifest import data_member
from ..monitor_policy import ALERT_KINDS, HISTORY, MonitorPolicy
from ..outage import failed_round
from ..parquet_bytes import read_frame
from ..serving import predlog
from ..vocabulary import HIGHER_IS_BETTER
from . import windows

if TYPE_CHECKING:
    import pandas as pd

    from . import metrics

log = logging.getLogger("handoff_agent")
MONITOR = {"user": "monitor", "roles": ["admin"]}
# An alert change as its SSE event and its webhook notice say it ("alert" names its kind: an
# event's own "type" is "alert").
ALERT_FIELDS = (
    "id",
    "model",
    "kind",
    "window",
    "state",
    "value",
    "threshold",
    "action",
    "outcome",
    "message",
    "fired_window",
    "cleared_window",
)


def alert_notice(alert: dict) -> dict:
    """An alert change (``judge``'s) as its event and notice carry it."""
    return {("alert" if k == "kind" else k): alert.get(k) for k in ALERT_FIELDS}


def clean(obj):
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class MonitorService:
    """Built by every agent; pandas and the frame code are imported where a window is read
    (importing them at each agent's start cost ~0.4 s)."""

    def __init__(self, registry, blobs, policy=None, stages=None):
        self.registry, self.blobs, self.policy, self.stages = registry, blobs, policy, stages
        # Called inside the transaction of each alert change (its window's) with its webhook
        # notice: notify("alert", event), so a crash after the commit cannot lose it (set by
        # agent.py when there is a webhook).
        self.notify = None
        self._refs: dict[str, tuple[str, metrics.Reference | None]] = {}

    @property
    def settings(self) -> MonitorPolicy:
        """The live policy's ``[monitor]`` table (defaults without a policy)."""
        return getattr(self.policy, "monitor", None) or MonitorPolicy()

    # -- the reference --------------------------------------------------------------------

    def reference(self, model: str) -> metrics.Reference | None:
        """The model's imported reference, else the production version's evaluation data."""
        from . import frames, metrics

        row = self.registry.reference_of(model)
        key = row["digest"] if row else ""
        if not row:
            prod = next(
                (r for r in self.registry.slots_of(model) if r["slot"] == "production"), None
            )
            key = f"bundle:{prod['digest']}" if prod else ""
        cached = self._refs.get(model)
        if cached and cached[0] == key:
            return cached[1]
        frame = None
        if row:
            frame = read_frame(self.blobs.read_bytes(row["digest"]))
        elif key:
            frame = self._bundle_reference(prod)
        ref = None
        if frame is not None and len(frame):
            features = [c for c in frame.columns if c not in frames.RESERVED]
            ref = metrics.reference_of(frame, features, self.settings)
            if not row and ref.metric is None and "label" in frame:
                version = self.registry.get_version(model, prod["number"])
                wanted = metrics.metric_of_task(version.get("task"), self.settings.metric)
                ref.metric = metrics.metric_for(frame["label"], wanted)
                ref.baseline = (version.get("metrics") or {}).get(ref.metric)
        self._refs[model] = (key, ref)
        return ref

    def _bundle_reference(self, prod: dict) -> pd.DataFrame | None:
        """The pushed evaluation data (``data/X.parquet``, labels ``data/y.parquet``): data,
        never model code, so the agent process may read it."""
        wanted = (data_member("X"), data_member("y"))
        with self.blobs.open(prod["digest"]) as f:
            found = read_members(f, wanted)
        if wanted[0] not in found:
            return None
        frame = read_frame(found[wanted[0]])
        if wanted[1] in found:
            frame["label"] = read_frame(found[wanted[1]]).iloc[:, 0].to_numpy()
        return frame

    # -- one run --------------------------------------------------------------------------

    def run_all(self, now: float | None = None) -> list[dict]:
        out = []
        for model in self.registry.monitored_models():
            try:
                out.append(self.run(model, now))
            except Exception:  # one model's bad log must not stop the others
                failed_round(log, "monitoring %s failed", model)
        return out

    def run(self, model: str, now: float | None = None) -> dict:
        """Evaluate every window of ``model`` that closed by ``now`` (default: the clock)
        and is not final yet. Returns the windows evaluated and the alert changes, which the
        caller publishes (SSE, destinations) and whose rollbacks it applies to serving."""
        from . import frames

        now = time.time() if now is None else float(now)
        p = self.settings
        result = {
            "model": model,
            "now": now,
            "windows": [],
            "alerts": [],
            "rolled_back": False,
            "skipped": [],
        }
        segments = [s for s in self.registry.segments_of(model) if s["first_time"] < now]
        if not segments:
            return result
        first = min(float(s["first_time"]) for s in segments)
        due = []  # (kind, start, end, stored state)
        for kind in p.windows:
            stored = self.registry.window_starts(model, kind)
            for start, end in windows.closed(kind, first, now):
                state, computed = stored.get(start, (None, None))
                if computed is not None and _logged_since(segments, start, end, computed):
                    state = None  # judged again, whole: a late import, a flush after it closed
                if state in ("final", "none"):
                    continue
                if state == "waiting" and now < end + p.label_delay_hours * 3600:
                    continue
                due.append((kind, start, end, state))
        since = min(
            [d[1] for d in due] + ([now - p.rolling_minutes * 60] if p.rolling_minutes else []),
            default=now,
        )
        logged, skipped = self._log(model, segments, since, now)
        result["skipped"] = [
            {k: s[k] for k in ("digest", "rows", "first_time", "last_time", "quarantined")}
            for s in skipped
        ]
        ids = logged["request_id"].astype(str).tolist()
        feedback = frames.feedback_frame(self.registry.labels_for(model, ids))
        ref = self.reference(model)
        for kind, start, end, state in due:
            window = logged[(logged["time"] >= start) & (logged["time"] < end)]
            row = self.evaluate(window, feedback, ref, start, end, now)
            lost = [
                s["digest"] for s in skipped if s["last_time"] >= start and s["first_time"] < end
            ]
            if lost:  # what the window's numbers are missing, said where they are read
                row["metrics"]["skipped_segments"] = lost
            # The window, its alerts and their actions (a rollback) commit together: a run
            # killed or failed in between leaves the window due, judged again next run,
            # never final without the alert it crossed into.
            with self.registry.transaction():
                self.registry.window_put(model, kind, start, end, row)
                changes = self.judge(model, kind, start, row, judge_closing=state is None)
                for change in changes if self.notify is not None else ():
                    self.notify("alert", alert_notice(change))
            result["windows"].append({"kind": kind, "start": start, **row})
            result["alerts"].extend(changes)
        if p.rolling_minutes > 0:
            start = now - p.rolling_minutes * 60
            window = logged[logged["time"] >= start]
            row = self.evaluate(window, feedback, ref, start, now, now, final=False)
            self.registry.window_put(model, "rolling", 0.0, now, {**row, "start": start})
        result["rolled_back"] = any(a.get("rolled_back") for a in result["alerts"])
        return result

    def _log(
        self, model: str, segments: list[dict], since: float, now: float
    ) -> tuple[pd.DataFrame, list[dict]]:
        """The log's records served in ``[since, now)``, from the readable segments that
        overlap it, and the overlapping segments left out (quarantined, now or before)."""
        import pandas as pd

        parts, skipped = [], []
        for s in segments:
            if not (s["last_time"] >= since and s["first_time"] < now):
                continue
            frame = predlog.segment_frame(self.registry, self.blobs, model, s)
            if frame is None:
                skipped.append(s)
            else:
                parts.append(frame)
        if not parts:
            empty = pd.DataFrame({n: pd.Series(dtype=object) for n, _ in predlog.SCHEMA})
            return empty, skipped
        logged = pd.concat(parts, ignore_index=True)
        t = logged["time"].astype(float)
        return logged[(t >= since) & (t < now)].assign(time=t), skipped

    def evaluate(self, window, feedback, ref, start, end, now, final=True) -> dict:
        from . import frames, metrics

        p = self.settings
        requests, rows = frames.rows(window)
        ops = metrics.operations(requests)
        m: dict = {"traffic": ops, "rows": len(rows), "start": start}
        if len(requests):  # every request's, errors too: a rollback acts only on these
            m["versions"] = sorted({int(v) for v in requests["version"].dropna()})
        if ref is None:
            m["reference"] = (
                "none: import one with `jupyter handoff monitor import NAME FILE --reference`"
            )
        elif len(rows):
            m["drift"] = metrics.input_drift(ref, rows, p)
            m["prediction_drift"] = metrics.prediction_drift(ref, rows, p)
            m["estimate"] = metrics.cbpe(rows, ref, p)
        status, reason = "ok", ""
        if ops["requests"] < p.min_samples:
            status = "insufficient"
            reason = f"{ops['requests']} predictions, fewer than min_samples = {p.min_samples}"
        elif ref is None:  # said where the views show a window's reason, not only in metrics
            reason = "no reference: input drift, prediction drift and performance not judged"
        labels, due = "none", end + p.label_delay_hours * 3600
        if ref is not None and len(rows) and status == "ok" and final:
            labelled = frames.with_labels(rows, feedback, now)
            n = int(labelled["label"].notna().sum())
            if now < due:
                labels = "waiting"
                m["labels_due"] = windows.iso(due)
            elif n >= p.min_labels:
                labels = "final"
                m["performance"] = metrics.performance(labelled, ref, p)
                if m["performance"] and m["performance"].get("baseline") is None:
                    reason = "no baseline (the version's checks recorded no metric to hold to)"
            elif now < end + p.label_wait_days * 86400:
                labels = "waiting"
                reason = f"{n} labels so far, fewer than min_labels = {p.min_labels}"
            else:
                reason = f"only {n} labels within label_wait_days; no labelled performance"
            m["labels"] = n
        return {"status": status, "reason": reason, "labels": labels, "metrics": clean(m)}

    # -- alerts ---------------------------------------------------------------------------

    def readings(self, row: dict, judge_closing: bool) -> list[tuple]:
        """(kind, value, threshold, crossed, worse, baseline) of each alert kind this window
        can judge: ``worse`` the side of the threshold that is worse (``above``/``below``),
        ``baseline`` the performance kinds' (for the clear level)."""
        from . import metrics

        p, m = self.settings, row["metrics"]
        out = []
        if row["status"] != "ok":
            return out
        if judge_closing:
            ops = m["traffic"]
            if ops.get("error_rate") is not None:
                rate = ops["error_rate"]
                out.append(
                    ("error_rate", rate, p.max_error_rate, rate > p.max_error_rate, "above", None)
                )
            if ops.get("p99_ms") is not None:
                p99 = ops["p99_ms"]
                out.append(("latency", p99, p.max_p99_ms, p99 > p.max_p99_ms, "above", None))
            if m.get("drift"):
                share = m["drift"]["share"]
                limit = p.max_drift_share
                out.append(("drift", share, limit, share > limit, "above", None))
                top = max(_psis(m["drift"]), default=None)
                if top is not None:
                    limit = p.max_one_feature_psi
                    out.append(("feature_drift", top[0], limit, top[0] > limit, "above", None))
            pd_ = m.get("prediction_drift") or {}
            shift = max(
                (v for v in (pd_.get("psi"), pd_.get("score_psi")) if v is not None), default=None
            )
            if shift is not None:
                limit = p.max_prediction_psi
                out.append(("prediction_drift", shift, limit, shift > limit, "above", None))
            est = m.get("estimate")
            if est and est.get("calibrated") and est.get("baseline") is not None:
                out.append(
                    (
                        "estimated_performance",
                        est["estimate"],
                        metrics.bound("accuracy", est["baseline"], p),
                        metrics.estimate_worse(est, p),
                        "below",
                        est["baseline"],
                    )
                )
        perf = m.get("performance")
        if row["labels"] == "final" and perf and perf.get("baseline") is not None:
            bound = metrics.bound(perf["metric"], perf["baseline"], p)
            worse = "below" if HIGHER_IS_BETTER.get(perf["metric"]) else "above"
            crossed = metrics.worse(perf, p)
            out.append(("performance", perf["value"], bound, crossed, worse, perf["baseline"]))
        return out

    def marks(self, row: dict) -> list[dict]:
        """A stored window's readings for the views: per alert kind its value, threshold,
        the side of it that is worse, whether the window crossed it, and the level a firing
        alert's value must be back at to clear (``clears_at``). The same readings the alerts
        are judged on, so a view's marks and the alerts agree."""
        p = self.settings
        out = []
        for kind, value, threshold, crossed, worse, baseline in self.readings(row, True):
            out.append(
                {
                    "kind": kind,
                    "value": value,
                    "threshold": threshold,
                    "worse": worse,
                    "crossed": bool(crossed),
                    "clears_at": p.clear_level(threshold, worse, baseline),
                }
            )
        return clean(out)

    def judge(self, model: str, kind: str, start: float, row: dict, judge_closing: bool) -> list:
        """Fire and clear this window's alerts by the policy's hysteresis (``decide``): a
        crossing window fires an alert after ``fire_after`` in a row, a window back at its
        clear level clears it after ``clear_after`` in a row; a window older than the one
        that fired an alert (its late labels or log) says nothing of now."""
        p = self.settings
        changes, earlier = [], None
        for alert, value, threshold, crossed, worse, baseline in self.readings(row, judge_closing):
            current = self.registry.alert_open(model, alert, kind)
            if current is not None and start < current["fired_window"]:
                continue
            states = [p.reading_state(value, threshold, crossed, worse, baseline)]
            if (p.clear_after if current else p.fire_after) > 1:
                if earlier is None:
                    earlier = self._earlier(model, kind, start)
                since = current["fired_window"] if current else -math.inf
                states = [s for t, a, s in earlier if a == alert and t > since] + states
            decision = p.decide(current is not None, states)
            if decision == "fire":
                action = self.settings.action(alert)
                message = (
                    f"{model}: {ALERT_KINDS[alert]} {value:.4g} crossed {threshold:.4g} in the "
                    f"{kind} window from {windows.readable(start)}{_drift_detail(row, alert)}"
                )
                fired = self.registry.alert_fire(
                    model,
                    alert,
                    kind,
                    start,
                    value=value,
                    threshold=threshold,
                    action=action,
                    message=message,
                )
                if fired is None:  # another replica fired it first, and acts on it
                    continue
                served = row["metrics"].get("versions")
                outcome, rolled = self.act(model, fired, action, served)
                self.registry.alert_outcome(fired["id"], outcome)
                changes.append({**fired, "outcome": outcome, "rolled_back": rolled})
            elif decision == "clear":
                cleared = self.registry.alert_clear(current["id"], start, value)
                if cleared is not None:  # else another replica cleared it first
                    said = (
                        f"{model}: {ALERT_KINDS[alert]} {value:.4g} is back within "
                        f"{threshold:.4g} in the {kind} window from {windows.readable(start)}"
                    )  # the notice says what cleared it, not the firing's words again
                    changes.append({**cleared, "value": value, "message": said})
        return changes

    def _earlier(self, model: str, kind: str, start: float) -> list[tuple[float, str, str]]:
        """(start, alert kind, state) of each reading in the windows of ``kind`` stored
        before ``start`` (the latest ``HISTORY``), oldest first: the runs hysteresis counts."""
        p, out = self.settings, []
        for row in self.registry.windows_before(model, kind, start, HISTORY):
            for alert, value, threshold, crossed, worse, baseline in self.readings(row, True):
                state = p.reading_state(value, threshold, crossed, worse, baseline)
                out.append((row["start"], alert, state))
        return out

    def act(
        self, model: str, alert: dict, action: str, served: list[int] | None = None
    ) -> tuple[str, bool]:
        """Apply the policy's action; returns what it did (stored with the alert). A rollback
        not done (the window measured another version, or one not known) gets an audit row
        ``monitor.rollback_withheld`` saying why, in the alert's transaction."""
        if action == "retrain":
            self.registry.retrain_request(model, alert["id"], alert["message"])
            return "retrain requested (audit monitor.retrain_requested)", False
        if action != "rollback":
            return "notified", False
        outcome, rolled = self._rollback(model, alert, served)
        if not rolled:
            self.registry.rollback_withheld(model, alert["id"], outcome, served or [])
        return outcome, rolled

    def _rollback(self, model: str, alert: dict, served: list[int] | None) -> tuple[str, bool]:
        """Roll back only the version the window measured (``served``: its log's versions),
        named to the StageManager as an admin's rollback names it, so whether it still serves
        in production is checked under its lock, by the same rule: an hourly and a daily
        alert of one incident must not roll back the fix promoted since. An imported log's
        version 0 is no version: what it measured may serve anywhere, so it rolls back none."""
        if alert.get("window") == "monthly":  # it closes weeks after most of its traffic
            return "a monthly window does not roll back (the daily ones do); notified", False
        slots = {r["slot"]: r for r in self.registry.slots_of(model)}
        if "production" not in slots:
            return "nothing in production to roll back; notified", False
        serving = int(slots["production"]["number"])
        served = sorted(set(served or ()))
        known = [v for v in served if v > 0]
        if not known or 0 in served:
            alone = " alone" if serving in known else ""
            measured = "no version" if not served else "version 0 (imported: its version unknown)"
            measured += "".join(f" and {model}:{v}" for v in known)
            return (
                f"not rolled back: the window measured {measured}, not {model}:{serving}"
                f"{alone} that serves; notified",
                False,
            )
        # the one it measured; of several (a promotion within the window), the one serving
        number = serving if serving in known else known[-1]
        if self.stages is None or (number == serving and "previous" not in slots):
            return "no previous production version to roll back to; notified", False
        try:
            with self.registry.savepoint():  # refused: undo its part, keep the alert
                self.stages.transition(
                    model, number, MONITOR, "rollback", f"monitor: {alert['message']}"
                )
        except HandoffError as e:  # not in production (any more): an admin, a promotion
            return f"not rolled back ({e.message}); notified", False
        if number != serving:  # promoted since the slots were read: it was in production
            return f"rolled back {model}:{number}", True
        prev = slots["previous"]["number"]
        return f"rolled back {model}:{number}; {model}:{prev} serves again", True


def _logged_since(segments: list[dict], start: float, end: float, computed: str) -> bool:
    """Whether log records of ``[start, end)`` were stored after the window was computed."""
    return any(
        s["created"] > computed and s["first_time"] < end and s["last_time"] >= start
        for s in segments
    )


def _psis(drift: dict) -> list[tuple[float, str]]:
    """(PSI, feature) of each feature with one, largest first."""
    found = [(f["psi"], n) for n, f in drift["features"].items() if f.get("psi") is not None]
    return sorted(found, reverse=True)


def _drift_detail(row: dict, alert: str) -> str:
    """What an input-drift alert's reader needs to act on: which features moved, how much."""
    drift = row["metrics"].get("drift")
    if alert not in ("drift", "feature_drift") or not drift:
        return ""
    feats = drift["features"]
    names = drift["drifted"] if alert == "drift" else [_psis(drift)[0][1]]

    def one(name: str) -> str:
        f = feats[name]
        said = [f"PSI {f['psi']:.3g}"] if f.get("psi") is not None else []
        if f.get("unseen_share"):
            said.append(f"{f['unseen_share']:.0%} unseen values")
        if f.get("missing"):
            said.append("missing from the log")
        elif (f.get("missing_share") or 0) > (f.get("reference_missing_share") or 0):
            # drifted by its missing values, whatever its PSI (a low one read as no reason)
            said.append(
                f"{f['missing_share']:.0%} missing, reference "
                f"{f.get('reference_missing_share') or 0:.0%}"
            )
        return f"{name} ({', '.join(said)})" if said else name

    shown = ", ".join(one(n) for n in names[:5]) + (" …" if len(names) > 5 else "")
    return f": {shown}, {len(drift['drifted'])} of {len(feats)} features drifted"
