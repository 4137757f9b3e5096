"""Notice rows: webhook notices from the change that owes them until taken or given up.

A row is added unclaimed, in the change's transaction; any agent on the database claims it
when due (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so two replicas never attempt one at
once. A restart releases its own agent's claims at once, anyone else's lapse with the lease.
"""

from __future__ import annotations

from sqlalchemy import delete, or_, select, update

from . import tables as t
from ._util import as_dict, claim, now
from .base import StoreBase

N = t.notices.c
LEASE = 60.0  # seconds a claim holds a row, longer than one attempt (10 s) and its bookkeeping


class NoticeStore(StoreBase):
    def notice_add(
        self, kind: str, destination: str, delivery_id: str, body: str, at: float
    ) -> int:
        """The notice, written in the transaction of the change that owes it: unclaimed, due
        at ``at`` for whichever agent claims it."""
        with self._tx() as c:
            return c.execute(
                t.notices.insert()
                .values(
                    kind=kind,
                    destination=destination,
                    delivery_id=delivery_id,
                    body=body,
                    attempts=0,
                    next_try=at,
                    created=now(),
                    claimed_by=None,
                    claimed_until=None,
                )
                .returning(N.id)
            ).scalar_one()

    def notices_claim(self, owner: str, at: float, limit: int = 20) -> list[dict]:
        """Claim the notices due now."""
        due = (
            select(N.id)
            .where(N.next_try <= at, or_(N.claimed_until.is_(None), N.claimed_until < at))
            .order_by(N.next_try, N.id)
            .limit(limit)
        )
        with self._tx() as c:
            ids = claim(c, t.notices, due, owner, at + LEASE)
            if not ids:
                return []
            q = select(t.notices).where(N.id.in_(ids)).order_by(N.next_try, N.id)
            return [as_dict(r) for r in c.execute(q)]

    def notice_attempted(
        self, row_id: int, attempts: int, next_try: float | None, error: str | None
    ) -> None:
        """After an attempt: gone when taken or given up (``next_try`` None), else unclaimed
        until ``next_try``."""
        with self._tx() as c:
            if next_try is None:
                c.execute(delete(t.notices).where(N.id == row_id))
                return
            c.execute(
                update(t.notices)
                .where(N.id == row_id)
                .values(
                    attempts=attempts,
                    next_try=next_try,
                    last_error=(error or "")[:500],
                    claimed_by=None,
                    claimed_until=None,
                )
            )

    def notices_release(self, owner: str) -> int:
        """Claims this agent held when it stopped (or died): attempt them again now."""
        with self._tx() as c:
            return c.execute(
                update(t.notices)
                .where(N.claimed_by == owner)
                .values(claimed_by=None, claimed_until=None)
            ).rowcount

    def notice_rows(self, limit: int, after: int = 0) -> list[dict]:
        """The notices not yet taken nor given up, oldest first, a page at a time: their
        kind, destination, attempts, next try and last error (not their bodies)."""
        q = (
            select(
                N.id,
                N.kind,
                N.destination,
                N.delivery_id,
                N.attempts,
                N.next_try,
                N.last_error,
                N.created,
            )
            .where(N.id > after)
            .order_by(N.id)
            .limit(limit)
        )
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]
