"""Central's rows: stages, sign-offs, intake deliveries and the sources' anchored heads,
plus the local agent's mirror of central's stages.

Many writers: a stage change is a conditional update on the stage the caller read, under a
row lock on the version (PostgreSQL), so two replicas never both move one version; the loser
gets a 409. A delivery id is claimed by inserting it first (unique, on-conflict-do-nothing),
so a delivery that reaches two replicas at once is applied once.
"""

from __future__ import annotations

import json

from sqlalchemy import delete, func, select, update

from ..errors import Conflict, NotFound
from . import tables as t
from ._util import as_dict, canonical, now
from .base import StoreBase

V = t.versions.c
S = t.stages.c
G = t.signoffs.c
D = t.deliveries.c


class CentralStore(StoreBase):
    # -- stages and sign-offs -------------------------------------------------------------

    def version_for_stage(self, name: str, number: int) -> dict:
        """The version's id, stage and who pushed it, locked until the transaction ends.
        The model's row is locked first: one decision per model at a time, so a sign-off on
        one replica reads the slots a rollback on another just changed (its canary's bake
        restarted), and two versions cannot both take the canary slot."""
        with self._tx() as c:
            c.execute(select(t.models.c.name).where(t.models.c.name == name).with_for_update())
            row = c.execute(
                select(V.id, V.stage, V.pushed_by, V.origin)
                .where(V.model == name, V.number == number)
                .with_for_update()
            ).first()
        if row is None:
            raise NotFound(f"Model {name!r} has no version {number}.")
        return as_dict(row)

    def stage_set(
        self,
        version_id: int,
        stage: str,
        by: str,
        comment: str,
        subject: str,
        expected=...,
        needed: dict | None = None,
    ) -> None:
        """Enter ``stage``, with its history row and audit row. With ``expected``, only if
        the version is still in that stage: otherwise someone else moved it first (409).
        ``needed``: the sign-offs the policy asked for it, kept in the audit row (the policy
        may change later; a dossier shows what the move was judged by)."""
        with self._tx() as c:
            q = update(t.versions).where(V.id == version_id)
            if expected is not ...:
                q = q.where(V.stage.is_(None) if expected is None else V.stage == expected)
            if c.execute(q.values(stage=stage)).rowcount != 1:
                raise Conflict(
                    f"{subject} changed stage while this request ran; nothing was done.",
                    "Reload the version and try again.",
                    code="stage_race",
                )
            c.execute(
                t.stages.insert().values(
                    version_id=version_id, stage=stage, since=now(), by=by, comment=comment
                )
            )
            payload = {"stage": stage, "comment": comment}
            if needed is not None:
                payload["signoffs_needed"] = needed
            self.audit_append(by, "stage.enter", subject, payload)

    def signoffs_of(self, version_id: int, stage: str | None = None) -> list[dict]:
        q = select(G.stage, G.role, G.user, G.decision, G.comment, G.time).where(
            G.version_id == version_id
        )
        if stage:
            q = q.where(G.stage == stage)
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q.order_by(G.id))]

    def signoff_add(
        self,
        version_id: int,
        stage: str,
        role: str,
        user: str,
        decision: str,
        comment: str,
        subject,
    ) -> None:
        with self._tx() as c:
            c.execute(
                t.signoffs.insert().values(
                    version_id=version_id,
                    stage=stage,
                    role=role,
                    user=user,
                    decision=decision,
                    comment=comment,
                    time=now(),
                )
            )
            self.audit_append(
                user,
                "signoff",
                subject,
                {"stage": stage, "role": role, "decision": decision, "comment": comment},
            )

    def signoff_withdraw(self, version_id: int, signed: dict, by: str, why: str, subject) -> None:
        """Remove the sign-off ``signed`` (a row of ``signoffs_of``) and record it, as it was,
        in its audit row: the chain keeps the approval and its withdrawal, the table only
        what counts. Called under the version's lock (``version_for_stage``)."""
        with self._tx() as c:
            gone = c.execute(
                delete(t.signoffs).where(
                    G.version_id == version_id,
                    G.stage == signed["stage"],
                    G.user == signed["user"],
                )
            ).rowcount
            if gone != 1:  # the caller read it under the lock: only a bug gets here
                raise Conflict(
                    f"{subject}: the sign-off changed while this request ran; nothing was done.",
                    "Reload the version and try again.",
                    code="stage_race",
                )
            self.audit_append(
                by,
                "signoff.withdraw",
                subject,
                {
                    "stage": signed["stage"],
                    "role": signed["role"],
                    "user": signed["user"],
                    "decision": signed["decision"],
                    "comment": signed["comment"],
                    "signed": signed["time"],
                    "why": why,
                },
            )

    def in_production(self, name: str, besides: int) -> list[tuple[int, int]]:
        """(id, number) of the model's other versions in production."""
        with self._read() as c:
            return [
                tuple(r)
                for r in c.execute(
                    select(V.id, V.number).where(
                        V.model == name, V.stage == "production", V.number != besides
                    )
                )
            ]

    def in_stages(
        self, stages: tuple[str, ...], limit: int, only=None, after: int = 0
    ) -> list[dict]:
        """Versions in ``stages`` (``only``: (model, number), or (model, None) for a model's),
        oldest stage change first, each with when it entered its stage (``row``: that change's
        id; ``after`` one, the next page) and its sign-offs (all stages): what the review
        queue is built from."""
        waiting = select(V.id).where(V.stage.in_(stages))
        if only is not None:
            waiting = waiting.where(V.model == only[0])
            if only[1] is not None:
                waiting = waiting.where(V.number == only[1])
        latest = (  # each waiting version's stage row, hence the filter
            select(S.version_id, func.max(S.id).label("last"))
            .where(S.version_id.in_(waiting))
            .group_by(S.version_id)
            .subquery()
        )
        q = (
            select(
                V.id,
                V.model,
                V.number,
                V.stage,
                V.pushed_by,
                V.origin,
                V.status,
                V.verdict,
                S.since,
                S.id.label("row"),
            )
            .join(latest, latest.c.version_id == V.id)
            .join(t.stages, S.id == latest.c.last)
            .where(S.id > after)
            .order_by(S.id)
            .limit(limit)
        )
        with self._read() as c:
            rows = [as_dict(r) for r in c.execute(q)]
            signed: dict[int, list[dict]] = {r["id"]: [] for r in rows}
            if rows:
                for s in c.execute(
                    select(G.version_id, G.stage, G.role, G.user, G.decision, G.time)
                    .where(G.version_id.in_(list(signed)))
                    .order_by(G.id)
                ):
                    signed[s.version_id].append(as_dict(s))
        for r in rows:
            r["signoffs"] = signed[r["id"]]
        return rows

    def delivered_since(self, sender: str, since: str) -> list[tuple[str, int]]:
        """When each version ``sender`` delivered here since ``since`` (ISO time) arrived,
        and its size, oldest first: what the intake's hourly limits count."""
        q = (
            select(V.pushed_at, V.size)
            .where(V.pushed_by == sender, V.pushed_at >= since)
            .order_by(V.pushed_at)
        )
        with self._read() as c:
            return [(at, int(size or 0)) for at, size in c.execute(q)]

    def stage_history(self, version_id: int) -> list[dict]:
        q = (
            select(S.stage, S.since, S.by, S.comment)
            .where(S.version_id == version_id)
            .order_by(S.id)
        )
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]

    def mirror_stages(self, version_id: int, subject: str, remote: dict, by="central") -> None:
        """A local agent copies central's stages and sign-offs of a version it delivered."""
        with self._tx() as c:
            c.execute(delete(t.stages).where(S.version_id == version_id))
            c.execute(delete(t.signoffs).where(G.version_id == version_id))
            for s in remote.get("stages", []):
                c.execute(t.stages.insert().values(version_id=version_id, **_only(t.stages, s)))
            for s in remote.get("signoffs", []):
                c.execute(t.signoffs.insert().values(version_id=version_id, **_only(t.signoffs, s)))
            waits = remote.get("needs_trust")
            c.execute(
                update(t.versions)
                .where(V.id == version_id)
                .values(stage=remote.get("stage"), needs_trust=json.dumps(waits) if waits else None)
            )
            self.audit_append(by, "stage.mirror", subject, {"stage": remote.get("stage")})

    # -- intake ---------------------------------------------------------------------------

    def delivery_claim(self, delivery_id: str, source: str | None, body_digest: str) -> bool:
        """Record a delivery id before applying it. False: it was applied already (or is
        being applied by another replica, which this waits for)."""
        with self._tx() as c:
            res = c.execute(
                self._insert(t.deliveries)
                .values(
                    delivery_id=delivery_id,
                    source=source,
                    received=now(),
                    body_digest=body_digest,
                )
                .on_conflict_do_nothing(index_elements=["delivery_id"])
                .returning(D.delivery_id)
            )
            return res.first() is not None

    def delivery_bind(self, delivery_id: str, version_id: int, origin: dict | None) -> None:
        """The delivery names its version; ``origin`` (a new version's: who sent it, from
        which source) is recorded once. A later delivery of the same bytes, from whoever,
        passes None and never rewrites it."""
        with self._tx() as c:
            c.execute(
                update(t.deliveries)
                .where(D.delivery_id == delivery_id)
                .values(version_id=version_id)
            )
            if origin is not None:
                c.execute(
                    update(t.versions).where(V.id == version_id).values(origin=canonical(origin))
                )

    def delivery_seen(self, delivery_id: str) -> dict | None:
        q = (
            select(V.model, V.number, V.stage, D.body_digest, D.source)
            .join(t.versions, V.id == D.version_id)
            .where(D.delivery_id == delivery_id)
        )
        with self._read() as c:
            row = c.execute(q).first()
        if not row:
            return None
        return {
            "name": row[0],
            "version": row[1],
            "stage": row[2],
            "duplicate": True,
            "body_digest": row[3],
            "source": row[4],
        }

    def source_anchor(self, source) -> dict | None:
        """The newest head of ``source``'s audit chain this central anchored."""
        s = t.sources.c
        with self._read() as c:
            row = c.execute(
                select(s.seq, s.hash).where(s.source == source).order_by(s.seq.desc()).limit(1)
            ).first()
        return {"seq": row[0], "hash": row[1]} if row else None

    def source_anchor_add(self, source, head: dict, delivery_id: str) -> None:
        with self._tx() as c:
            c.execute(
                t.sources.insert().values(
                    source=source,
                    seq=head["seq"],
                    hash=head["hash"],
                    delivery_id=delivery_id,
                    time=now(),
                )
            )


def _only(table, row: dict) -> dict:
    return {k: v for k, v in row.items() if k in table.c and k not in ("id", "version_id")}
