"""Outbox rows: deliveries waiting for a destination.

Many writers: a process claims due rows before it attempts them (``FOR UPDATE SKIP LOCKED``
on PostgreSQL, BEGIN IMMEDIATE on SQLite) and holds them for a lease, so two processes never
attempt the same row at once. A claim ends with the attempt (delivered, retry, dead); a
restart releases its own agent's claims at once, anyone else's lapse with the lease.
"""

from __future__ import annotations

import json
import time
import uuid

from sqlalchemy import func, or_, select, update

from . import tables as t
from ._util import as_dict, claim, loads, now
from .base import StoreBase

OB = t.outbox.c
V = t.versions.c
LEASE = 600.0  # seconds a claim holds a row, longer than any one attempt


class OutboxStore(StoreBase):
    def outbox_enqueue(self, version_id: int, destination: str, forced_by: str | None = None):
        """False when that version already goes (or went) to that destination. A forced
        forward sends a dead delivery again, once its cause is fixed: pending from its first
        attempt, with the same id and body (a refusal left nothing at the destination); a
        pending one it tries now (still False: it was queued already)."""
        with self._tx() as c:
            res = c.execute(
                self._insert(t.outbox)
                .values(
                    destination=destination,
                    version_id=version_id,
                    delivery_id=uuid.uuid4().hex,
                    attempts=0,
                    next_try=0.0,
                    state="pending",
                    forced_by=forced_by,
                    created=now(),
                )
                .on_conflict_do_nothing(index_elements=["destination", "version_id"])
                .returning(OB.id)
            )
            again = hurried = False
            if res.first() is None:  # rowcount is not reliable for an insert on every driver
                if forced_by is None:
                    return False
                again, hurried = _revive(c, version_id, destination, forced_by)
                if not (again or hurried):
                    return False
            model, number = c.execute(select(V.model, V.number).where(V.id == version_id)).one()
            detail = {"destination": destination, "forced": bool(forced_by), "again": again}
            if hurried:
                detail["now"] = True  # a waiting delivery tried at once
            self.audit_append(forced_by or "agent", "forward.queue", f"{model}:{number}", detail)
            return not hurried

    def outbox_claim(
        self, owner: str, at: float, limit: int = 20, ordered: tuple[str, ...] = ()
    ) -> list[dict]:
        """Claim rows to attempt now. An ``ordered`` destination only ever gets its oldest
        pending row, so its deliveries arrive in the order they were queued."""
        cond = [
            OB.state == "pending",
            OB.next_try <= at,
            or_(OB.claimed_until.is_(None), OB.claimed_until < at),
        ]
        if ordered:
            p = t.outbox.alias("p")
            oldest = (
                select(func.min(p.c.id))
                .where(p.c.destination == OB.destination, p.c.state == "pending")
                .scalar_subquery()
            )
            cond.append(or_(OB.destination.not_in(ordered), OB.id == oldest))
        with self._tx() as c:
            due = select(OB.id).where(*cond).order_by(OB.next_try, OB.id).limit(limit)
            ids = claim(c, t.outbox, due, owner, at + LEASE)
            if not ids:
                return []
            q = (
                select(t.outbox, V.model, V.number, V.digest)
                .join(t.versions, V.id == OB.version_id)
                .where(OB.id.in_(ids))
                .order_by(OB.next_try, OB.id)
            )
            return [as_dict(r) for r in c.execute(q)]

    def outbox_release(self, owner: str) -> int:
        """Claims this agent held when it stopped (or died): attempt them again now."""
        with self._tx() as c:
            return c.execute(
                update(t.outbox)
                .where(OB.claimed_by == owner, OB.state == "pending")
                .values(claimed_by=None, claimed_until=None)
            ).rowcount

    def outbox_unclaim(self, row_id: int) -> None:
        with self._tx() as c:
            c.execute(
                update(t.outbox).where(OB.id == row_id).values(claimed_by=None, claimed_until=None)
            )

    def outbox_acknowledged(self, destination: str) -> dict | None:
        """The newest audit head ``destination`` said it anchored for this agent, or None."""
        q = (
            select(OB.remote)
            .where(
                OB.destination == destination,
                OB.state == "delivered",
                OB.remote.like("%audit_anchor%"),
            )
            .order_by(OB.id.desc())
            .limit(20)
        )
        with self._read() as c:
            for remote in c.execute(q).scalars():
                anchor = json.loads(remote).get("audit_anchor")
                if isinstance(anchor, dict) and type(anchor.get("seq")) is int:
                    return anchor
        return None

    def outbox_body_kept(self, digest: str) -> bool:
        """Whether a blob stays once a delivery that sent it is done: another delivery still
        to go sends the same bytes (bodies are content-addressed), or a version, a report, a
        prediction log or a graph is those bytes."""
        pending = select(OB.id).where(OB.body_digest == digest, OB.state != "delivered")
        with self._read() as c:
            return any(
                c.execute(q.limit(1)).first() is not None
                for q in (pending, *(select(col).where(col == digest) for col in t.BLOB_REFERENCES))
            )

    def outbox_delivered_bodies(self, after: int = 0, limit: int = 100) -> list[dict]:
        """Delivered rows whose body has not been removed yet (an agent stopped in between,
        or one older than the removal): what the forwarder sweeps when it starts."""
        q = (
            select(OB.id, OB.body_digest, V.model, V.number)
            .join(t.versions, V.id == OB.version_id)
            .where(OB.state == "delivered", OB.body_digest.is_not(None), OB.id > after)
            .order_by(OB.id)
            .limit(limit)
        )
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]

    def outbox_body_removed(self, row_id: int) -> None:
        with self._tx() as c:
            c.execute(update(t.outbox).where(OB.id == row_id).values(body_digest=None))

    def outbox_set_body(self, row_id: int, digest: str) -> None:
        with self._tx() as c:
            c.execute(update(t.outbox).where(OB.id == row_id).values(body_digest=digest))

    def outbox_delivered(self, row: dict, remote: dict) -> None:
        with self._tx() as c:
            c.execute(
                update(t.outbox)
                .where(OB.id == row["id"])
                .values(
                    state="delivered",
                    delivered=now(),
                    remote=json.dumps(remote),
                    attempts=OB.attempts + 1,
                    last_error=None,
                    claimed_by=None,
                    claimed_until=None,
                )
            )
            self.audit_append(
                "agent",
                "forward.delivered",
                f"{row['model']}:{row['number']}",
                {
                    "destination": row["destination"],
                    "delivery": row["delivery_id"],
                    "remote": remote,
                },
            )

    def outbox_retry(self, row: dict, error: str, delay: float) -> None:
        with self._tx() as c:
            _attempt_ended(c, row, error, next_try=time.time() + delay)

    def outbox_rebuild(self, row: dict, error: str) -> None:
        """A body the destination found stale (its audit rows end behind what later
        deliveries anchored): a new delivery id, the body built again, tried now."""
        with self._tx() as c:
            _attempt_ended(
                c, row, error, next_try=0.0, delivery_id=uuid.uuid4().hex, body_digest=None
            )

    def outbox_dead(self, row: dict, error: str) -> None:
        with self._tx() as c:
            _attempt_ended(c, row, error, state="dead")
            self.audit_append(
                "agent",
                "forward.dead",
                f"{row['model']}:{row['number']}",
                {"destination": row["destination"], "error": error},
            )

    def outbox_for_version(self, version_id: int) -> list[dict]:
        return self.outbox_for_versions([version_id]).get(version_id, [])

    def outbox_for_versions(self, version_ids: list[int]) -> dict[int, list[dict]]:
        """Each version's hand-offs, oldest first, in one query for a page of versions."""
        if not version_ids:
            return {}
        q = (
            select(
                OB.version_id,
                OB.destination,
                OB.delivery_id,
                OB.state,
                OB.attempts,
                OB.last_error,
                OB.remote,
                OB.delivered,
            )
            .where(OB.version_id.in_(version_ids))
            .order_by(OB.id)
        )
        out: dict[int, list[dict]] = {}
        with self._read() as c:
            for r in c.execute(q):
                row = {**as_dict(r), "remote": loads(r.remote)}
                out.setdefault(row.pop("version_id"), []).append(row)
        return out

    def outbox_rows(self, states: tuple[str, ...], limit: int, after: int = 0) -> list[dict]:
        """Deliveries in ``states``, oldest first, a page at a time (``after``: the last id
        of the page before): which version, where, how many attempts, the next one, and why
        the last failed."""
        q = (
            select(
                OB.id,
                V.model,
                V.number,
                OB.destination,
                OB.state,
                OB.attempts,
                OB.next_try,
                OB.last_error,
                OB.forced_by,
                OB.remote,
                OB.created,
                OB.delivered,
            )
            .join(t.versions, V.id == OB.version_id)
            .where(OB.state.in_(states), OB.id > after)
            .order_by(OB.id)
            .limit(limit)
        )
        with self._read() as c:
            return [{**as_dict(r), "remote": loads(r.remote)} for r in c.execute(q)]

    def outbox_summary(self) -> list[dict]:
        q = (
            select(
                OB.destination,
                OB.state,
                func.count().label("n"),
                func.max(OB.last_error).label("last_error"),
            )
            .group_by(OB.destination, OB.state)
            .order_by(OB.destination, OB.state)
        )
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]

    def awaiting_stage(self, terminal: tuple[str, ...], destination: str = "central"):
        """Versions delivered to ``destination`` whose stage may still change there."""
        q = (
            select(OB.version_id, OB.remote, V.model, V.number, V.stage)
            .join(t.versions, V.id == OB.version_id)
            .where(
                OB.destination == destination,
                OB.state == "delivered",
                func.coalesce(V.stage, "").not_in(terminal),
            )
        )
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]


def _attempt_ended(c, row: dict, error: str, **values) -> None:
    """An attempt at ``row`` is over: counted, its error kept, its claim let go."""
    c.execute(
        update(t.outbox)
        .where(OB.id == row["id"])
        .values(
            attempts=OB.attempts + 1,
            last_error=error,
            claimed_by=None,
            claimed_until=None,
            **values,
        )
    )


def _revive(c, version_id: int, destination: str, forced_by: str) -> tuple[bool, bool]:
    """(revived, hurried): a dead delivery of the version to the destination pending again,
    or a pending one that waits for its next try (a central's Retry-After, once its admin
    lifted a limit) tried now; each then records who forced it."""
    hurried = c.execute(
        update(t.outbox)
        .where(OB.version_id == version_id, OB.destination == destination, OB.state == "pending")
        .values(next_try=0.0, forced_by=forced_by)
        .returning(OB.id)
    ).first()
    res = c.execute(
        update(t.outbox)
        .where(OB.version_id == version_id, OB.destination == destination, OB.state == "dead")
        .values(
            state="pending",
            attempts=0,
            next_try=0.0,
            last_error=None,
            forced_by=forced_by,
            claimed_by=None,
            claimed_until=None,
        )
        .returning(OB.id)
    )
    return res.first() is not None, hurried is not None
