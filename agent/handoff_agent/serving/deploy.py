"""Stages drive deployments: when a version enters a stage, its slots move.

- ``validated``: the test slot (reachable only by version), the newest validated version's,
  but for the time another's load test runs in it (``hold_test_slot``);
- ``approved``: the shadow slot, when the policy asks for shadow (``[deploy] shadow = true``);
- ``canary``: the canary slot, at the policy's ``canary_percent``;
- ``production``: all the traffic; the production it replaces stays loaded as ``previous``,
  the rollback target;
- ``rollback`` of the production version: the previous one is production again, in the same
  step (stage, slots and audit rows in one transaction);
- ``rejected``, ``archived``, ``rollback`` of anything else: out of every slot.

``on_stage`` is called by the StageManager inside the transaction of the stage change, so a
stage and its slots never disagree, on any replica. The model servers follow the slot table.
"""

from __future__ import annotations

import dataclasses
import time

from ..errors import BadRequest, Conflict, NotFound
from ..vocabulary import traffic_share_problem


def shares(rows: list[dict]) -> dict[str, float]:
    """Each slot's share of the model's traffic: the canary's, production the rest; a canary
    with no production takes it all; test, shadow and previous none (reached by version)."""
    canary = next((r for r in rows if r["slot"] == "canary"), None)
    has_prod = any(r["slot"] == "production" for r in rows)
    share = 0.0 if canary is None else (float(canary["traffic"]) if has_prod else 100.0)
    return {
        r["slot"]: {"production": 100.0 - share, "canary": share}.get(r["slot"], 0.0) for r in rows
    }


class DeploymentService:
    def __init__(self, store, policy):
        self.store, self.policy = store, policy
        # The guardrails' live reading of a model's slots (serving.canary_guard.Guardrails.judge):
        # every replica's stats, the canary's decision, the shadow's report. Set by agent.py.
        self.judge = None
        # The StageManager's ``owed`` (set by agent.py): called inside the transaction of each
        # stage set here, so one that leaves a version waiting for sign-offs commits its
        # review notice with it, as the StageManager's own changes do.
        self.owed = None

    @property
    def settings(self):
        """The live policy's ``[deploy]`` table (deploy_policy.DeployPolicy)."""
        return self.policy.deploy

    # -- the StageManager's hook (inside its transaction) ---------------------------------

    def on_stage(self, subject: str, version_id: int, before: str | None, stage: str, by: str):
        model, _, raw = subject.rpartition(":")
        number = int(raw)
        slots = self._slots(model)
        holds = [s for s, r in slots.items() if r["number"] == number]

        def clear(*which):
            for slot in which:
                if slot in holds:
                    self.store.slot_clear(model, slot, by, f"{subject} entered {stage}")

        if stage == "validated":
            held = slots.get("test")
            if held is None or not self._under_test(held["version_id"]):
                self.store.slot_set(model, "test", version_id, number, 0.0, by)
        elif stage == "approved" and self.settings.shadow:
            self.store.slot_set(model, "shadow", version_id, number, 0.0, by)
        elif stage == "canary":
            live = slots.get("canary")
            if live is not None and live["number"] != number:
                # taking its slot would leave it in stage canary, serving nothing, until a
                # restart found it unslotted
                raise Conflict(
                    f"{model}:{live['number']} is the canary now; {subject} cannot take its "
                    "place while it runs.",
                    f"Promote {model}:{live['number']} once its bake is clean, or stop it "
                    f"(`jupyter handoff stage {model}:{live['number']} archived`), then sign "
                    f"{subject} off again.",
                    code="canary_live",
                )
            clear("test", "shadow")
            share = float(self.settings.schedule[0])  # the first of the linear steps
            self.store.slot_set(model, "canary", version_id, number, share, by)
        elif stage == "production":
            current = slots.get("production")
            if current is not None and current["number"] != number:
                self.store.slot_set(
                    model, "previous", current["version_id"], current["number"], 0.0, by
                )
            clear("test", "shadow", "canary")
            self.store.slot_set(model, "production", version_id, number, 100.0, by)
        elif stage == "rollback" and "production" in holds:
            self._restore_previous(model, subject, slots, by)
            clear(*[s for s in holds if s != "production"])
            canary = slots.get("canary")
            if canary is not None and canary["number"] != number:
                # its bake so far was against the production rolled back: it bakes again
                self.store.slot_traffic(model, "canary", canary["traffic"], by)
        elif stage in ("rejected", "archived", "rollback"):
            canary = slots.get("canary")
            if "production" in holds and canary is not None and canary["number"] != number:
                raise Conflict(
                    f"{subject} is in production beside the canary {model}:{canary['number']}: "
                    f"taking it out of service would hand the canary all traffic, unbaked.",
                    f"Stop the canary first (`jupyter handoff stage {model}:{canary['number']} "
                    "archived`), or promote it once its bake is clean.",
                    code="canary_live",
                )
            clear(*holds)

    def traffic_of(self, model: str) -> dict:
        """The versions that take the model's traffic (its monitoring's windows close over
        their predictions) and, when none does, why in words: where its newest version is."""
        rows = self.store.slots_of(model)
        share = shares(rows)
        live = [
            {"slot": r["slot"], "version": r["number"], "traffic": share[r["slot"]]}
            for r in rows
            if share[r["slot"]] > 0
        ]
        if live:
            return {"versions": live, "why_none": None}
        try:
            v = self.store.list_versions(model, 1)[0]
        except NotFound:  # monitored from an imported prediction log alone
            return {"versions": [], "why_none": None}
        where = {
            "needs_trust": "waits for an admin to trust the types it names "
            f"({', '.join(v.get('needs_trust') or []) or 'see the version'})",
            "rejected": "was rejected",
            "archived": "is archived",
            "rollback": "was rolled back",
        }.get(v["stage"], f"is in {v['stage']}; it takes traffic from its canary on")
        return {
            "versions": [],
            "why_none": f"No version of {model} takes traffic: {model}:{v['number']} {where}.",
        }

    def _slots(self, model: str) -> dict[str, dict]:
        """The model's slot rows, by slot."""
        return {r["slot"]: r for r in self.store.slots_of(model)}

    def _under_test(self, version_id: int, owner: str | None = None) -> bool:
        """Its load test runs in the test slot now, on a live claim (a replica that died
        holds nothing once its lease ran out): another version waits its turn. ``owner``:
        the asking replica, whose own older claims are stale (it runs one test at a time)."""
        row = self.store.validation_of(version_id)
        return (
            row is not None
            and row["state"] in ("converting", "load_testing")
            and (row["claimed_until"] or 0) > time.time()
            and (owner is None or row["claimed_by"] != owner)
        )

    # -- validation's turn in the test slot -----------------------------------------------

    def hold_test_slot(self, model: str, number: int, by: str, owner: str) -> str:
        """Validation load-tests ``model:number`` in the test slot: it takes the slot back
        from a newer version that entered validated before its turn. "held"; "left": it has
        left validated; "busy": another replica's load test of the model runs in the slot
        (two tests at once would measure each other's version)."""
        with self.store.transaction():
            vid = self.store.version_id(model, number)
            if self.store.version_stage(vid) != "validated":
                return "left"
            held = self._slots(model).get("test")
            if held is None or held["number"] != number:
                if held is not None and self._under_test(held["version_id"], owner):
                    return "busy"
                self.store.slot_set(model, "test", vid, number, 0.0, by)
            return "held"

    def release_test_slot(self, model: str, number: int, by: str) -> None:
        """After the load test of ``model:number``: the test slot holds the model's newest
        validated version, unless another replica's test has taken the slot meanwhile."""
        with self.store.transaction():
            newest = self.store.newest_in_stage(model, "validated")
            held = self._slots(model).get("test")
            if held is not None and held["number"] != number:
                return
            if newest is not None and (held is None or held["number"] != newest["number"]):
                self.store.slot_set(model, "test", newest["version_id"], newest["number"], 0.0, by)

    def _restore_previous(self, model: str, subject: str, slots: dict, by: str) -> None:
        prev, canary = slots.get("previous"), slots.get("canary")
        if prev is None:  # clearing production would hand all traffic to an unbaked canary
            raise Conflict(
                f"{model!r} has no previous production version to roll back {subject} to (a "
                "rollback restores the one production replaced, once).",
                f"To stop the canary instead: `jupyter handoff stage {model}:{canary['number']} "
                f"archived` ({subject} then serves all traffic)."
                if canary is not None
                else f"To take it out of service: `jupyter handoff stage {subject} archived`.",
                code="nothing_to_roll_back",
            )
        self._stage_set(
            prev["version_id"],
            "production",
            by,
            f"rollback of {subject}",
            f"{model}:{prev['number']}",
            "archived",
        )
        self.store.slot_set(model, "production", prev["version_id"], prev["number"], 100.0, by)
        self.store.slot_clear(model, "previous", by, "back in production")

    def _stage_set(self, version_id: int, stage: str, by: str, why: str, subject: str, was: str):
        """Move a version from stage ``was``, in the caller's transaction, with what it owes."""
        self.store.stage_set(version_id, stage, by, why, subject, expected=was)
        if self.owed is not None:
            self.owed(version_id, stage, subject)

    def adopt_unslotted(self, by: str = "upgrade") -> list[str]:
        """Give versions left in production or canary with no slot (a home from before the
        model server) their slot, and archive canaries an older build displaced, each with
        its audit row: what a start puts right, in words for the log."""
        placed = []
        with self.store.transaction():
            for v in self.store.unslotted():
                share = 100.0 if v["stage"] == "production" else float(self.settings.schedule[0])
                self.store.slot_set(v["model"], v["stage"], v["version_id"], v["number"], share, by)
                placed.append(f"{v['model']}:{v['number']} ({v['stage']})")
            for v in self.store.displaced_canaries():  # never offered for production unbaked
                subject = f"{v['model']}:{v['number']}"
                why = "displaced by a later canary: it served no traffic and never baked"
                self._stage_set(v["version_id"], "archived", by, why, subject, "canary")
                placed.append(f"{subject} (archived: {why})")
        return placed

    # -- admin actions --------------------------------------------------------------------

    def production_version(self, model: str) -> int:
        slots = self._slots(model)
        if "production" not in slots:
            raise Conflict(
                f"{model!r} has no version in production; there is nothing to roll back.",
                code="nothing_to_roll_back",
            )
        return int(slots["production"]["number"])

    def abort_canary(
        self, model: str, reason: str, by: str = "guardrails", outright: bool = False
    ) -> int:
        """The canary goes to 0 % and its version to stage ``rollback`` with ``reason``, in
        one transaction with the audit rows (what a guardrail alarm does). Returns it.
        ``outright`` (a watch's ``rollback_canary``): refused, like a pause, while no version
        is in production, since the canary is then the only version serving."""
        with self.store.transaction():
            slots = self._slots(model)
            canary = slots.get("canary")
            if canary is None:
                raise NotFound(f"{model!r} has no canary.", code="no_canary")
            if outright and "production" not in slots:
                raise self._no_production(model, slots)
            subject = f"{model}:{canary['number']}"
            self._stage_set(canary["version_id"], "rollback", by, reason, subject, "canary")
            self.store.slot_clear(model, "canary", by, reason)
            return int(canary["number"])

    def set_traffic(
        self, model: str, percent: float, by: str, expected: float | None = None
    ) -> dict:
        """The canary's share, 0..100 (the guardrails' linear steps, or an admin). With
        ``expected``, only while the share is still that (a lost race is a 409). Asked
        outright (an admin, a watch's pause), refused while no version is in production: the
        canary serves all the traffic then, whatever its share says."""
        problem = traffic_share_problem(percent)
        if problem:
            raise BadRequest(problem, code="bad_traffic")
        with self.store.transaction():
            slots = self._slots(model)
            if expected is None and "canary" in slots and "production" not in slots:
                raise self._no_production(model, slots)
            if not self.store.slot_traffic(model, "canary", percent, by, expected):
                if expected is not None and "canary" in self._slots(model):
                    raise Conflict(
                        f"{model!r}'s canary share changed meanwhile.", code="traffic_race"
                    )
                raise NotFound(f"{model!r} has no canary.", code="no_canary")
        return {"canary": percent}

    @staticmethod
    def _no_production(model: str, slots: dict) -> Conflict:
        """Why a canary is not paused or rolled back outright: it serves alone."""
        subject = f"{model}:{slots['canary']['number']}"
        return Conflict(
            f"{model!r} has no production version: its canary, {subject}, serves all "
            "the traffic whatever its share.",
            "The share applies once a version is in production. To stop the canary "
            f"serving: `jupyter handoff stage {subject} archived`.",
            code="no_production",
        )

    # -- what GET /api/v1/models/{name}/deployment shows ----------------------------------

    def view(self, model: str, server=None) -> dict:
        """Slots, traffic, every replica's stats (requests, error rate, p50/p99) and the
        alarms per slot; ``guardrails``: the canary's decision and the shadow's report."""
        rows = self.store.slots_of(model)
        judged = self.judge(model, rows) if self.judge is not None else {}
        traffic = shares(rows)
        slots = []
        for r in rows:
            entry = {
                "slot": r["slot"],
                "version": r["number"],
                "traffic": traffic[r["slot"]],
                "since": r["since"],
                "by": r["by"],
            }
            entry.update(judged.get("stats", {}).get(r["slot"], {}))
            entry["alarms"] = judged.get("alarms", {}).get(r["slot"], [])
            if server is not None:
                entry.update(server.version_stats(model, r["number"], r["slot"]))
            slots.append(entry)
        return {
            "model": model,
            "slots": slots,
            "guardrails": {
                "canary": judged.get("canary"),
                "shadow": judged.get("shadow"),
                "tick": server.tick if server is not None else None,
            },
            "serving_url": server.url if server is not None else None,
            "policy": dataclasses.asdict(self.settings),  # [deploy], as plain JSON
        }
