"""Stages and sign-offs at central: each transition needs the sign-offs its policy names.

``received → validated → approved → canary → production → archived``, plus ``rejected``
and ``rollback``. Every change and its audit row share one transaction. The version row
is locked while a decision is made, and the move itself is conditional on the stage that was
read: across replicas a version moves once, and a lost race is a 409.
"""

from __future__ import annotations

import json

from .errors import BadRequest, Conflict, Forbidden, HandoffError
from .policy import FLOW, Policy
from .vocabulary import STAGES, signoff_to, verdict_of, when_text


class StageManager:
    def __init__(self, store, policy: Policy, on_stage=None):
        self.store = store
        self.policy = policy
        # Called inside the stage change's transaction (serving.deploy moves the slots):
        # on_stage(subject, version_id, previous_stage, stage, by).
        self.on_stage = on_stage
        # Called before a version moves forward, inside the transaction; each may refuse
        # with a HandoffError (the load test's gate): guard(version_row, stage, subject).
        self.guards: list = []
        # Called inside the transaction of a change that leaves a version waiting for people
        # (a stage whose next one names sign-offs, needs_trust, a withdrawn sign-off), with
        # the notice it owes: notify(kind, event), "review" (its queue entry) or "trust". The
        # webhook notice commits with the change, never lost to a crash after the commit.
        self.notify = None

    def enter(
        self, version_id: int, stage: str, by: str, subject: str, comment: str = "", expected=...
    ):
        """A stage change the agent itself makes (received, validated, rejected). With
        ``expected``, only from that stage (else a 409 ``stage_race``, nothing done)."""
        with self.store.transaction():
            self.store.stage_set(version_id, stage, by, comment, subject, expected=expected)
            if self.on_stage is not None:
                self.on_stage(subject, version_id, None, stage, by)
            self.owed(version_id, stage, subject)

    def owed(self, version_id: int, stage: str, subject: str) -> None:
        """Inside the transaction that just set ``stage``: the notice owed when it leaves the
        version waiting for people (an admin's trust, or sign-offs for its next stage). Only
        the change that makes it wait writes it, so a stage announced twice (the verdict,
        then the slot) is noticed once, on any replica and across restarts."""
        if self.notify is None:
            return
        name, _, raw = subject.rpartition(":")
        if stage == "needs_trust":
            types = self.store.trust_waits_of(version_id)
            self.notify("trust", {"model": name, "version": int(raw), "needs_trust": types})
            return
        entry = self.review_of(name, int(raw))  # as the queue shows it, in this transaction
        if entry is not None:
            self.notify("review", entry)

    def signoffs(self, version_id: int, stage: str | None = None) -> list[dict]:
        return self.store.signoffs_of(version_id, stage)

    def sign(
        self,
        name: str,
        number: int,
        who: dict,
        decision: str,
        comment: str,
        role: str | None = None,
        to: str | None = None,
    ) -> dict:
        """Record a sign-off for the next stage; move on when the policy is satisfied.
        ``to``, the stage the reviewer saw as next: a sign-off sent while another moved the
        version on is refused, not counted toward the stage after."""
        if decision not in ("approve", "reject"):
            raise BadRequest(
                "decision must be 'approve', 'reject' or 'withdraw' (your own sign-off, while "
                "the version still waits)."
            )
        if to is not None and to not in STAGES:
            raise BadRequest(
                f"{to!r} is not a stage.",
                "A sign-off moves a version to one of: "
                f"{', '.join(s for s in FLOW if s in self.policy.stages)}.",
            )
        with self.store.transaction():
            v = self.store.version_for_stage(name, number)
            target = signoff_to(v["stage"], self.policy.stages)
            if target is None:
                raise Conflict(
                    f"{name}:{number} is {v['stage']}; there is nothing to sign off now, and "
                    "nothing was recorded.",
                    _no_signoff_hint(name, v["stage"]),
                    code="wrong_stage",
                )
            if to and to != target:
                raise Conflict(
                    f"{name}:{number} is {v['stage']} now, so a sign-off for {to} no longer "
                    "applies; nothing was recorded.",
                    f"Look at it again: it waits for sign-offs for {target}.",
                    code="stage_moved",
                )
            if _pushed(v, who["user"]):
                raise Forbidden(
                    f"{who['user']} pushed {name}:{number} and cannot sign it off.",
                    "Ask another reviewer.",
                    code="self_signoff",
                )
            done = self.signoffs(v["id"], target)
            if _signed(done, who["user"]):
                raise Conflict(
                    f"{who['user']} already signed off {name}:{number} for {target}.",
                    "To change it while the version waits, withdraw it first (jupyter "
                    f"handoff signoff {name}:{number} --withdraw -m WHY), then sign again.",
                    code="duplicate_signoff",
                )
            role = self._role(target, done, who, role)
            subject = f"{name}:{number}"
            if decision == "approve":
                self._guard(v, target, subject)
            self.store.signoff_add(v["id"], target, role, who["user"], decision, comment, subject)
            if decision == "reject":
                self._set(v, "rejected", who["user"], comment, subject)
                return {"stage": "rejected"}
            if not self.policy.missing(
                target, [*done, {"role": role, "user": who["user"], "decision": "approve"}]
            ):
                self._set(v, target, who["user"], comment, subject)
                self._archive_previous(name, number, target, who["user"])
                return {"stage": target}
            return {"stage": v["stage"], "waiting_for": target}

    def withdraw(
        self, name: str, number: int, who: dict, comment: str, to: str | None = None
    ) -> dict:
        """Take back ``who``'s own sign-off for the stage the version waits for (``to``, if
        given, must be that stage). Under ``sign``'s locks (the model's row, then the
        version's): a withdrawal racing the sign-off that would complete the stage either
        lands first, so that one no longer completes it, or finds the version moved: a 409,
        the sign-off counted. Only its author withdraws a sign-off: it is a person's word;
        an admin who must stop a version archives it, under their own name."""
        if to is not None and to not in STAGES:
            raise BadRequest(
                f"{to!r} is not a stage.",
                "Name the stage you signed for, as `jupyter handoff reviews` shows it.",
            )
        subject = f"{name}:{number}"
        with self.store.transaction():
            v = self.store.version_for_stage(name, number)
            target = signoff_to(v["stage"], self.policy.stages)
            stage = to or target
            mine = self._own(v["id"], stage, who["user"])
            if mine is not None and stage == target:
                self.store.signoff_withdraw(v["id"], mine, who["user"], comment, subject)
                withdrawn = {k: mine[k] for k in ("stage", "role", "user", "decision")}
                entry = self.review_of(name, number)  # as the queue shows it now
                if entry is not None and self.notify is not None:
                    self.notify("review", {**entry, "withdrawn": withdrawn})
                return {"stage": v["stage"], "waiting_for": target, "withdrawn": withdrawn}
            if mine is None and to is None:  # signed for a stage it has since left or ended?
                mine = self._own(v["id"], v["stage"], who["user"]) or next(
                    (s for s in reversed(self.signoffs(v["id"])) if _signed([s], who["user"])),
                    None,
                )
                stage = mine["stage"] if mine is not None else stage
            if mine is not None:
                raise _counted(name, number, v["stage"], stage, target)
            others = sorted({s["user"] for s in self.signoffs(v["id"], stage)}) if stage else []
            if stage is None:
                message = f"{who['user']} has no sign-off of {subject} to withdraw: it is "
                message += f"{v['stage']} and waits for none; nothing was changed."
                hint = _no_signoff_hint(name, v["stage"])
            else:
                message = f"{who['user']} has no sign-off of {subject} for {stage} to "
                message += "withdraw; nothing was changed."
                hint = (
                    f"Only its author withdraws a sign-off ({', '.join(others)} signed)."
                    if others
                    else f"It waits for sign-offs for {target} now."
                    if target and target != stage
                    else "`jupyter handoff reviews` shows who signed what."
                )
            raise Conflict(message, hint, code="nothing_to_withdraw")

    def _own(self, version_id: int, stage: str | None, user: str) -> dict | None:
        """``user``'s sign-off of the version for ``stage``, if there is one."""
        if stage is None:
            return None
        return next(
            (s for s in self.signoffs(version_id, stage) if _signed([s], user)),
            None,
        )

    def _role(self, target: str, done: list[dict], who: dict, asked: str | None) -> str:
        """The role a sign-off counts in: one the stage needs and ``who`` holds. One holding
        several signs in the one still missing (a reviewer and admin fills the admin
        sign-off once a reviewer's is in). A role the stage does not name would be recorded
        and count for nothing, so it is refused."""
        needed = self.policy.stages.get(target, {})
        held = [r for r in self.policy.missing(target, done) if r in who["roles"]]
        held += [r for r in needed if r in who["roles"]]
        if asked in held:
            return asked
        if held:
            return held[0]
        roles = " or ".join(r for r, n in needed.items() if n) or "no one"
        raise Forbidden(
            f"{who['user']} cannot sign off for {target}: it needs {roles}, and "
            f"{who['user']} holds {', '.join(who['roles']) or 'no role'}.",
            f"Ask someone with the {roles} role to sign it off.",
            code="role_not_needed",
        )

    def review_of(self, name: str, number: int) -> dict | None:
        """The review queue's entry for one version; None when it waits for no sign-off."""
        return next(iter(self.queue(only=(name, number))), None)

    def queue(self, who: dict | None = None, limit: int = 500, only=None) -> list[dict]:
        """Versions waiting for sign-offs, oldest first: the first ``limit`` of ``page``."""
        return self.page(who, limit, only)["reviews"]

    def page(self, who: dict | None = None, limit: int = 500, only=None, after: int = 0) -> dict:
        """A page of the versions waiting for sign-offs, oldest first: the next stage, the
        sign-offs still missing (role -> count) and those in; ``next`` (the ``after`` of the
        next page) while there are more. With ``who``, only those ``who`` may sign now:
        holds a missing role, did not push it, has not signed it for that stage. ``only``:
        (model, number), or (model, None) for one model's. The store is read in batches,
        so entries past the first ``limit`` rows still come when earlier ones are not ``who``'s."""
        waiting = tuple(
            s for s in FLOW if s != "received" and self.policy.stages.get(self.policy.next_stage(s))
        )
        found: list[tuple[int, dict]] = []
        batch = max(limit + 1, 200)
        while len(found) <= limit:
            rows = self.store.in_stages(waiting, batch, only, after)
            for v in rows:
                after = v["row"]
                entry = self._entry(v, who)
                if entry is not None:
                    found.append((v["row"], entry))
                    if len(found) > limit:
                        break
            if len(rows) < batch:
                break
        body = {"reviews": [e for _, e in found[:limit]]}
        if len(found) > limit:
            body["next"] = found[limit - 1][0]
        return body

    def _entry(self, v: dict, who: dict | None) -> dict | None:
        """``v``'s entry in the queue; None when it is not ``who``'s to act on."""
        target = self.policy.next_stage(v["stage"])
        signed = [s for s in v["signoffs"] if s["stage"] == target]
        missing = self.policy.missing(target, signed)
        # its sign-offs all in under today's policy (relaxed since they came in): still
        # listed, or it would wait unseen; one more sign-off, or an admin's move, moves it
        ready = not missing
        if who is not None:
            may_sign = not (_pushed(v, who["user"]) or _signed(signed, who["user"])) and set(
                missing or self.policy.stages.get(target, {})
            ) & set(who["roles"])
            if not may_sign and not (ready and "admin" in who["roles"]):
                return None
        return {
            "model": v["model"],
            "version": v["number"],
            "stage": v["stage"],
            "since": v["since"],
            "next": target,
            "missing": missing,
            "signoffs": [{k: s[k] for k in ("role", "user", "decision", "time")} for s in signed],
            "verdict": verdict_of(
                {"verdict": json.loads(v["verdict"] or "null"), "status": v["status"]}
            ),
            "pushed_by": v["pushed_by"],
            "blocked": self._blocked(v, target),
            **({"ready": True} if ready else {}),
        }

    def _blocked(self, v: dict, target: str) -> dict | None:
        """What would refuse an approval now (a bake, a shadow, a load test), as its error."""
        try:
            self._guard(v, target, f"{v['model']}:{v['number']}")
        except HandoffError as e:
            return {"code": e.code, "message": e.message}
        return None

    def transition(self, name: str, number: int, who: dict, to: str, comment: str) -> dict:
        """An admin's explicit move. Forward moves still need their sign-offs."""
        with self.store.transaction():
            v = self.store.version_for_stage(name, number)
            subject = f"{name}:{number}"
            if to in ("archived", "rollback"):
                if v["stage"] == to:  # a second click, or two admins at once
                    raise self._already(v, to, subject)
                if to == "rollback" and v["stage"] != "production":
                    raise self._not_production(v, subject)
                self._set(v, to, who["user"], comment, subject)
                return {"stage": to}
            if to not in FLOW or to != self.policy.next_stage(v["stage"]):
                after = self.policy.next_stage(v["stage"])
                raise Conflict(
                    f"{subject} is {v['stage']}; it cannot move to {to!r}.",
                    f"The next stage is {after!r}." if after else f"No stage follows {v['stage']}.",
                    code="wrong_stage",
                )
            self._guard(v, to, subject)
            missing = self.policy.missing(to, self.signoffs(v["id"], to))
            if missing:
                need = ", ".join(f"{n} more {r}" for r, n in missing.items())
                raise Conflict(
                    f"{subject} cannot enter {to}: missing sign-offs ({need}).",
                    "Ask the named roles to sign off first.",
                    code="missing_signoffs",
                )
            self._set(v, to, who["user"], comment, subject)
            self._archive_previous(name, number, to, who["user"])
            return {"stage": to}

    def _already(self, v: dict, stage: str, subject: str) -> Conflict:
        """The loser of two admins making the same move: who made it, and when (its stage
        row), rather than a rule it did not break."""
        said, how = self._how(v, stage)
        return Conflict(
            f"{subject} was {said} already{how}; nothing was done.",
            "Reload the version: its stage history says what happened.",
            code="wrong_stage",
        )

    def _not_production(self, v: dict, subject: str) -> Conflict:
        """A rollback of a version that is not in production: one that was and has left
        (a newer one promoted, an admin archived it) is told how, like ``_already``, so a
        rollback meant for it never lands on the version serving in its place."""
        history = self.store.stage_history(v["id"])
        if any(h["stage"] == "production" for h in history):
            said, how = self._how(v, v["stage"])
            return Conflict(
                f"{subject} is no longer in production: it was {said}{how}; nothing was done.",
                "Reload the deployment: it shows the version serving now.",
                code="wrong_stage",
            )
        name = subject.rpartition(":")[0]
        return Conflict(
            f"{subject} is {v['stage'] or 'not staged yet'}, not in production; only the "
            "production version can be rolled back, and nothing was done.",
            f"`jupyter handoff deployment {name}` shows the version in production.",
            code="wrong_stage",
        )

    def _how(self, v: dict, stage: str) -> tuple[str, str]:
        """How ``v`` entered ``stage`` in words, from its last stage row: ("rolled back",
        ", by ada at T ('why')"); the comment left out when it is the default."""
        done = [h for h in self.store.stage_history(v["id"]) if h["stage"] == stage]
        said = "rolled back" if stage == "rollback" else stage
        who = f", by {done[-1]['by']} at {when_text(done[-1]['since'])}" if done else ""
        comment = done[-1]["comment"] if done else ""
        why = f" ({comment!r})" if comment and comment != stage else ""  # not the default
        return said, who + why

    def _guard(self, v: dict, stage: str, subject: str) -> None:
        for guard in self.guards:
            guard(v, stage, subject)

    def _set(self, v: dict, stage: str, by: str, comment: str, subject: str) -> None:
        """Move from the stage ``v`` was read in; a concurrent move first makes this a 409."""
        needed = self.policy.stages.get(stage)
        self.store.stage_set(v["id"], stage, by, comment, subject, v["stage"], needed)
        if self.on_stage is not None:
            self.on_stage(subject, v["id"], v["stage"], stage, by)
        self.owed(v["id"], stage, subject)

    def _archive_previous(self, name: str, number: int, stage: str, by: str) -> None:
        if stage != "production":
            return
        for vid, n in self.store.in_production(name, number):
            self.store.stage_set(
                vid, "archived", by, f"replaced by version {number}", f"{name}:{n}", "production"
            )
            self.owed(vid, "archived", f"{name}:{n}")

    def history(self, version_id: int) -> list[dict]:
        return self.store.stage_history(version_id)


def _pushed(v: dict, user: str) -> bool:
    """Whether ``user`` pushed version ``v``: the sender central authenticated, or the analyst
    the envelope names (only a claim, but enough to keep anyone from approving what they say
    they pushed). Nobody signs off their own version."""
    claimed = json.loads(v["origin"] or "{}").get("claimed_by")
    return user.casefold() in {str(u).casefold() for u in (v["pushed_by"], claimed) if u}


def _signed(signoffs: list[dict], user: str) -> bool:
    """Whether ``user`` is among ``signoffs`` already (each person counts once a stage)."""
    return any(s["user"].casefold() == user.casefold() for s in signoffs)


def _counted(name: str, number: int, now: str, stage: str, waits: str | None) -> Conflict:
    """The 409 for a withdrawal that comes after the sign-off did its work."""
    subject = f"{name}:{number}"
    if now in ("rejected", "archived", "rollback"):
        return Conflict(
            f"{subject} is {now}; your sign-off for {stage} no longer waits on anything and "
            "stays on the record. Nothing was withdrawn.",
            _no_signoff_hint(name, now),
            code="signoff_counted",
        )
    moved = f"already moved to {stage}" if now == stage else f"moved to {stage} and is {now} now"
    if now == "production":
        stop = f"ask an admin to roll it back (jupyter handoff rollback {name})"
    else:
        stop = f"ask an admin to archive it (jupyter handoff stage {subject} archived)"
        if waits:
            stop += (
                f", or reject it for {waits} (jupyter handoff signoff {subject} --reject -m WHY)"
            )
    return Conflict(
        f"{subject} {moved}; your sign-off counted and stays on the record. Nothing was withdrawn.",
        f"To stop it: {stop}.",
        code="signoff_counted",
    )


NO_SIGNOFF = {  # why a version in this stage waits for no sign-off, and what to do
    "received": "Central is still checking it: sign it off once it is validated.",
    "needs_trust": "It waits for an admin to trust its types (jupyter handoff trust list); "
    "once validated it can be signed off.",
    "rejected": "A rejected version is not signed off again: a fixed model comes as a new version.",
    "rollback": "A rolled-back version is not signed off again: a fixed model comes as a new "
    "version.",
    "archived": "An archived version is not signed off again.",
}


def _no_signoff_hint(name: str, stage: str) -> str:
    if stage == "production":
        return (
            f"It serves until another version is promoted, or an admin runs `jupyter "
            f"handoff rollback {name}`."
        )
    return NO_SIGNOFF.get(stage, "Its next stage needs no sign-off under central's policy.")
