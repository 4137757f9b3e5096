"""The guardrails at work: each model-server tick judges every canary on all replicas' stats.

- An alarm rolls the canary back at once: ``DeploymentService.abort_canary`` (canary to 0 %,
  stage ``rollback`` with the alarm as reason, audit rows) and the decision's row, in one
  transaction. The stage change is conditional on the version still being ``canary``, so of
  several replicas seeing the alarm, one acts and the others find nothing to do.
- A held step moves to the next one (``set_traffic`` conditional on the current share).
- Every change of state (baking, next step, ready to promote, rolled back; a shadow's verdict)
  is a ``guardrail_events`` row and an event. ``promote_ready`` is the clean bake.

``guard`` is the StageManager's: entering ``production`` needs a clean bake of the canary
against the production it replaces (``[deploy] promote_after_bake``), and entering ``canary``
after shadowing needs a passed shadow report (``shadow`` and ``shadow_gate``). Both are
judged on the stats at that moment, inside the stage change's transaction.

Runs on the store thread (``tick``, ``judge``, ``guard``); ``on_tick`` is the model server's
tick hook, on the event loop.
"""

from __future__ import annotations

import time
from itertools import groupby

from ..errors import Conflict, NotFound
from ..vocabulary import ALARMS
from .guardrails import evaluate_slots, seconds, shadow_slots
from .server import SLICE_SECONDS
from .stats import StatsBook

HOUR = 3600.0
FOREVER = 10 * 365 * 86_400.0  # a merged book keeps whatever it was given
BY = "guardrails"


class BakeNotClean(Conflict):
    code = "bake_not_clean"


class ShadowNotPassed(Conflict):
    code = "shadow_not_passed"


def _round(x):
    return round(x, 3) if isinstance(x, float) else x


class Guardrails:
    """``deployments``: the DeploymentService (abort_canary, set_traffic); ``publish``: the
    event bus's publish; ``replica``: this process among central replicas; ``notify``:
    ``(kind, event)``, called inside a rollback's transaction with its webhook notice (the
    agent's ``Notices.keep``, shared with the monitor's alerts), or None."""

    def __init__(self, store, deployments, policy, publish, replica: str, notify=None):
        self.store, self.deployments, self.policy = store, deployments, policy
        self.publish, self.replica, self.notify = publish, replica, notify

    @property
    def settings(self):
        return self.policy.deploy

    @property
    def horizon(self) -> float:
        """Seconds of stats read: an hour, or twice the longest step or bake."""
        d = self.settings
        return max(HOUR, 2 * max(d.step_seconds, d.bake_seconds))

    # -- every replica's stats ------------------------------------------------------------

    def book(self, model: str, since: float, now: float) -> StatsBook:
        """The model's stats from ``since`` on, every replica's merged; at most the last
        ``horizon`` seconds of them, so a slot held for days costs what an hour does."""
        since = max(since, now - self.horizon)
        book = StatsBook(window_seconds=FOREVER, slice_seconds=SLICE_SECONDS)
        for r in self.store.serving_stats_of(model, int(since // SLICE_SECONDS)):
            book.add_slice(model, r["version"], r["slot"], r["slice"], r["stats"])
        return book

    def _decision(self, book, model: str, slots: dict, now: float):
        canary, prod = slots.get("canary"), slots.get("production")
        if canary is None:
            return None
        return evaluate_slots(
            book,
            model,
            canary["number"],
            prod["number"] if prod is not None else None,
            self.policy,
            now=now,
            started_at=canary["since"],
            # with no production the canary serves everything: no step is left to take
            percent=float(canary["traffic"]) if prod is not None else 100.0,
        )

    def _shadow(self, book, model: str, slots: dict, now: float):
        shadow, prod = slots.get("shadow"), slots.get("production")
        if shadow is None or prod is None:
            return None
        return shadow_slots(
            book,
            model,
            shadow["number"],
            prod["number"],
            self.policy,
            now=now,
            since=shadow["since"],
        )

    def judge(self, model: str, rows: list[dict] | None = None, now: float | None = None) -> dict:
        """What ``GET …/deployment`` shows: each slot's stats since it took its share (the
        stats slices from then on that a bake counts: ``stats.counted_from``), the alarms
        holding per slot, the canary's decision and the shadow's report."""
        rows = self.store.slots_of(model) if rows is None else rows
        now = time.time() if now is None else now
        if not rows:
            return {}
        slots = {r["slot"]: r for r in rows}
        book = self.book(model, min(seconds(r["since"]) for r in rows), now)
        stats = {}
        for r in rows:
            w = book.window(model, r["number"], r["slot"], now, since=seconds(r["since"]))
            summary = {k: _round(v) for k, v in w.summary().items()}
            summary["error_rate"] = summary["error_rate"] or 0.0
            if w.paired:
                summary["agreement"] = _round(w.agreement)
            stats[r["slot"]] = summary
        decision = self._decision(book, model, slots, now)
        report = self._shadow(book, model, slots, now)
        alarms = {}
        if decision is not None:
            alarms["canary"] = [
                {**a.to_dict(), "what": ALARMS[a.metric], "reason": a.sentence}
                for a in decision.alarms
            ]
        return {
            "stats": stats,
            "alarms": alarms,
            "canary": decision.to_dict() if decision is not None else None,
            "shadow": report.to_dict() if report is not None else None,
        }

    # -- each tick --------------------------------------------------------------------------

    def tick(self, now: float, tick: int) -> list[tuple[str, dict]]:
        """Judge every canary and shadow; act; return the events to publish."""
        out: list[tuple[str, dict]] = []
        for model, group in groupby(self.store.slots_of(), key=lambda r: r["model"]):
            slots = {r["slot"]: r for r in group}
            if "canary" not in slots and not ("shadow" in slots and "production" in slots):
                continue
            judged = [slots[s] for s in ("canary", "shadow") if s in slots]
            book = self.book(model, min(seconds(r["since"]) for r in judged), now)
            if "canary" in slots:
                out += self._canary(model, slots, book, now, tick)
            if "shadow" in slots and "production" in slots:
                out += self._shadow_tick(model, slots, book, now, tick)
        return out

    def _canary(self, model, slots, book, now, tick) -> list[tuple[str, dict]]:
        canary = slots["canary"]
        number = int(canary["number"])
        d = self._decision(book, model, slots, now)
        payload = {**d.to_dict(), "tick": tick}
        event = {
            "model": model,
            "version": number,
            "slot": "canary",
            "state": d.state,
            "percent": d.percent,
            "reason": d.reason,
            "alarm": payload["alarm"],
            "tick": tick,
        }
        if d.state == "rollback":
            prod = slots.get("production")  # untouched by the abort: it serves on
            event["production"] = int(prod["number"]) if prod is not None else None
            try:
                with self.store.transaction():
                    self.deployments.abort_canary(model, d.reason, BY)
                    self._record(model, number, "canary", d.state, 0.0, d.reason, payload)
                    if self.notify is not None:  # committed with the rollback, never lost
                        self.notify("guardrail", event)
            except (Conflict, NotFound):
                return []  # another replica rolled it back (or it moved on) first
            stage = {"model": model, "version": number, "stage": "rollback", "by": BY}
            return [("guardrail", event), ("stage", {**stage, "comment": d.reason})]
        if d.state == "step_up":
            try:
                with self.store.transaction():
                    self.deployments.set_traffic(
                        model, d.percent, BY, expected=float(canary["traffic"])
                    )
                    self._record(model, number, "canary", d.state, d.percent, d.reason, payload)
            except (Conflict, NotFound):
                return []
            return [("guardrail", event)]
        last = self.store.guardrail_last(model, number, "canary")
        if last is not None and (last["state"], last["percent"]) == (d.state, d.percent):
            return []
        self._record(model, number, "canary", d.state, d.percent, d.reason, payload)
        return [("guardrail", event)]

    def _shadow_tick(self, model, slots, book, now, tick) -> list[tuple[str, dict]]:
        number = int(slots["shadow"]["number"])
        report = self._shadow(book, model, slots, now)
        state = {True: "passed", False: "failed", None: "shadowing"}[report.passed]
        last = self.store.guardrail_last(model, number, "shadow")
        if last is not None and last["state"] == state:
            return []
        self._record(model, number, "shadow", state, 0.0, report.reason, report.to_dict())
        event = {"model": model, "version": number, "slot": "shadow", "state": state}
        return [("guardrail", {**event, "reason": report.reason, "tick": tick})]

    def _record(self, model, number, slot, state, percent, reason, payload) -> None:
        self.store.guardrail_event_add(
            model, number, slot, state, percent, reason, payload, self.replica
        )

    async def on_tick(self, server) -> None:
        """The model server's tick hook: judge, publish, and move this replica's routing now
        when a canary rolled back or stepped (the others follow their next poll). A
        rollback's webhook notice was kept in its transaction, once: only one replica acts."""
        events = await server.call(self.tick, time.time(), server.tick)
        for kind, data in events:
            self.publish(kind, **data)
        if any(k == "stage" or d.get("state") == "step_up" for k, d in events):
            await server.refresh()

    # -- the StageManager's guard -----------------------------------------------------------

    def guard(self, v: dict, stage: str, subject: str, now: float | None = None) -> None:
        """Refuse ``production`` before a clean bake, ``canary`` before a passed shadow."""
        model, _, raw = subject.rpartition(":")
        number, d = int(raw), self.settings
        now = time.time() if now is None else now
        if stage == "production" and d.promote_after_bake:
            self._clean_bake(model, number, subject, now)
        elif stage == "canary" and d.shadow and d.shadow_gate:
            self._shadow_passed(model, number, subject, now)

    def _clean_bake(self, model: str, number: int, subject: str, now: float) -> None:
        slots = {r["slot"]: r for r in self.store.slots_of(model)}
        canary, prod = slots.get("canary"), slots.get("production")
        if prod is None or int(prod["number"]) == number:
            return  # a first version: nothing to bake against
        if canary is None or int(canary["number"]) != number:
            raise BakeNotClean(
                f"{subject} has not baked as a canary against production {model}:{prod['number']}.",
                "Move it to canary first; promotion follows a clean bake.",
            )
        d = self._decision(self.book(model, seconds(canary["since"]), now), model, slots, now)
        if d.state != "promote_ready":
            raise BakeNotClean(
                f"{subject} cannot enter production before a clean bake: {d.reason}",
                "Wait until GET /api/v1/models/NAME/deployment shows the canary ready to "
                "promote, or set [deploy] promote_after_bake = false.",
            )

    def _shadow_passed(self, model: str, number: int, subject: str, now: float) -> None:
        slots = {r["slot"]: r for r in self.store.slots_of(model)}
        shadow = slots.get("shadow")
        if shadow is None or int(shadow["number"]) != number or "production" not in slots:
            return  # never shadowed (approved before shadow was on, or no production)
        report = self._shadow(self.book(model, seconds(shadow["since"]), now), model, slots, now)
        if not report.passed:
            raise ShadowNotPassed(
                f"{subject} cannot enter canary before its shadow report passes: {report.reason}",
                "Send traffic and wait until GET /api/v1/models/NAME/deployment shows the "
                "shadow passed, or set [deploy] shadow_gate = false.",
            )
