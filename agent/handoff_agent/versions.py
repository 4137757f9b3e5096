"""The version service: owns the push transaction and the verdict.

One database transaction holds each step with its audit rows: the registry write (version,
lineage, queued checks), and, once the last check is in, the gate's verdict, the status it
maps to, the score the champion rule ranks by, and the outbox rows of the hand-off. The
metadata store only stores; the decisions are made here.
"""

from __future__ import annotations

from typing import Protocol

from .retention import refuse_pruned
from .vocabulary import (  # defined once
    CHECK_RUN_STATES,
    LOWER_IS_BETTER,
    PROVISIONAL_CHECKS,
    VERDICT_STATUS,
)

# The champion rule: the version in production, else the best-scored one that passed.
CHAMPION_STAGE = "production"
CHAMPION_STATUSES = (VERDICT_STATUS["pass"], VERDICT_STATUS["warn"])


class Store(Protocol):
    def transaction(self): ...
    def insert_version(self, name, digest, size, manifest, actor, checks, status="pushed"): ...
    def record_check(self, run_id, status, message, result, duration, owner=None): ...
    def set_provisional(self, version_id, verdict): ...
    def set_version(self, version_id, **values): ...
    def get_version(self, name, number): ...
    def version_stage(self, version_id): ...
    def audit_append(self, actor, action, subject, payload): ...
    def outbox_enqueue(self, version_id, destination, forced_by=None): ...
    def version_id(self, name, number): ...
    def pruned_held(self, version_id): ...
    def best_version(self, name, before=2**62, *, stage=None, statuses=()): ...


def score_of(metrics: dict) -> float | None:
    """The primary metric, oriented so that higher is better (the champion rule ranks it)."""
    primary = metrics.get("primary_metric")
    value = metrics.get(primary)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return -value if primary in LOWER_IS_BETTER else value


class VersionService:
    def __init__(self, store: Store, verdict_fn=None, forward_fn=None):
        self.store = store
        self.verdict_fn = verdict_fn
        self.forward_fn = forward_fn

    def create_version(self, name, digest, size, manifest, actor, checks, conclude=True, full=True):
        """Create the next version of ``name``, or return the one with the same bytes.
        Without checks the verdict (and any hand-off) come in the same transaction.
        ``full=False``: return only its id, model, number and stage, and for a new version its
        status and any verdict (a push's answer needs no more, and the whole version is eight
        more queries inside the writer's transaction)."""
        with self.store.transaction():
            status = "checking" if checks else "pushed"  # until the verdict
            vid, number, created = self.store.insert_version(
                name, digest, size, manifest, actor, checks, status
            )
            concluded = {}
            if created and not checks and conclude and self.verdict_fn is not None:
                concluded = self._conclude(vid, name, number, [])
            if not full:
                stage = None if created else self.store.version_stage(vid)
                light = {"id": vid, "model": name, "number": number, "stage": stage}
                if created:
                    light.update({"status": status, **concluded})
                return light, created
            return self.store.get_version(name, number), created

    def finish_check(self, run_id, status, message, result, duration, owner=None) -> dict | None:
        """Commit one check's result. The version's last one brings the verdict with it; the
        last of ``PROVISIONAL_CHECKS`` brings a provisional verdict while others still run.
        None, and nothing changes, when the run is no longer ``owner``'s: another replica
        took it over after this one's claim lapsed, and its result is the one that counts."""
        with self.store.transaction():
            recorded = self.store.record_check(run_id, status, message, result, duration, owner)
            if recorded is None:
                return None
            out, runs = recorded
            metrics = (result or {}).get("metrics") or {}
            if out["check"] == "performance" and (score := score_of(metrics)) is not None:
                self.store.set_version(out["version_id"], score=score, metrics=metrics)
            pending = [r["name"] for r in runs if r["status"] in CHECK_RUN_STATES]
            if not pending:
                return {
                    **out,
                    **self._conclude(out["version_id"], out["model"], out["version"], runs),
                }
            first = [r for r in runs if r["name"] in PROVISIONAL_CHECKS]
            if first and not any(r["name"] in pending for r in first):
                finished = [r for r in runs if r["name"] not in pending]
                provisional = {**self._verdict_fn()(finished), "pending": pending}
                if self.store.set_provisional(out["version_id"], provisional):
                    out["provisional"] = provisional
            return out

    def force_forward(self, name: str, number: int, destination: str, user: str) -> bool:
        """Queue a hand-off whatever the verdict, recorded with who asked; never for a
        version whose bundle retention removed (410)."""
        with self.store.transaction():
            version_id = self.store.version_id(name, number)
            pruned = self.store.pruned_held(version_id)
            refuse_pruned(name, {"number": number, "pruned": pruned})
            return self.store.outbox_enqueue(version_id, destination, forced_by=user)

    def champion(self, name: str, before: int = 2**62) -> dict | None:
        """The version a new one must beat: the one in production if there is one, else
        the best earlier version that passed. The store only finds them; the rule is here."""
        store = self.store
        return store.best_version(name, before, stage=CHAMPION_STAGE) or store.best_version(
            name, before, statuses=CHAMPION_STATUSES
        )

    def _verdict_fn(self):
        if self.verdict_fn is None:
            from .gate import GatePolicy

            return GatePolicy().verdict
        return self.verdict_fn

    def _conclude(self, version_id, model, number, runs) -> dict:
        verdict = self._verdict_fn()(runs)
        status = VERDICT_STATUS[verdict["verdict"]]
        # The final verdict replaces the provisional one.
        self.store.set_version(version_id, status=status, verdict=verdict, provisional=None)
        self.store.audit_append("agent", "version.verdict", f"{model}:{number}", verdict)
        # The outbox rows share the verdict's transaction: no verdict without its hand-off.
        for destination in self.forward_fn(verdict) if self.forward_fn else []:
            self.store.outbox_enqueue(version_id, destination)
        return {"verdict": verdict, "status": status}
