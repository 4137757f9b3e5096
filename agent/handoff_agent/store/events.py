"""The events table: what happened, for the SSE streams of every replica sharing a database.

Each replica appends the events it publishes and tails the ones the others appended (ids
only grow); on PostgreSQL a NOTIFY wakes the tails. Old rows are pruned: events are a live
feed, and clients re-read state on reconnect.
"""

from __future__ import annotations

import contextlib
import json
import os
import select as io_select
import time

from sqlalchemy import delete, func, select, text

from . import tables as t
from .base import StoreBase

E = t.events.c
CHANNEL = "handoff_events"
KEEP = 10_000


class EventStore(StoreBase):
    def event_append(self, origin: str, event: dict) -> int:
        with self._tx() as c:
            eid = c.execute(
                t.events.insert()
                .values(origin=origin, time=time.time(), payload=json.dumps(event, default=str))
                .returning(E.id)
            ).scalar_one()
            if self.dialect == "postgresql":
                c.execute(text("SELECT pg_notify(:ch, '')"), {"ch": CHANNEL})
            if eid % 1000 == 0:
                c.execute(delete(t.events).where(E.id <= eid - KEEP))
            return eid

    def event_append_many(self, origin: str, events: list[dict]) -> int:
        """Append several events in one transaction (one commit, one NOTIFY)."""
        with self._tx() as c:
            t_ = time.time()
            rows = [
                {"origin": origin, "time": t_, "payload": json.dumps(e, default=str)}
                for e in events
            ]
            c.execute(t.events.insert(), rows)
            eid = c.execute(select(func.max(E.id))).scalar_one()
            if self.dialect == "postgresql":
                c.execute(text("SELECT pg_notify(:ch, '')"), {"ch": CHANNEL})
            if eid // 1000 != (eid - len(rows)) // 1000:
                c.execute(delete(t.events).where(E.id <= eid - KEEP))
            return eid

    def event_last_id(self) -> int:
        with self._read() as c:
            return c.execute(select(func.coalesce(func.max(E.id), 0))).scalar_one()

    def events_since(self, after: int, origin: str, limit: int = 500) -> tuple[int, list[dict]]:
        """Events other replicas appended after ``after``; returns the new high-water mark."""
        with self._read() as c:
            rows = c.execute(
                select(E.id, E.origin, E.payload).where(E.id > after).order_by(E.id).limit(limit)
            ).all()
        last = rows[-1].id if rows else after
        return last, [json.loads(r.payload) for r in rows if r.origin != origin]

    def event_listener(self) -> EventListener | None:
        """On PostgreSQL, a connection of its own that LISTENs for appended events; None on
        SQLite (one file, no other replica to hear from)."""
        return EventListener(self.engine) if self.dialect == "postgresql" else None


class EventListener:
    """Wakes a tail when a replica appends an event (LISTEN/NOTIFY); the table stays the
    source of truth, so a missed notification only delays an event to the next poll."""

    def __init__(self, engine):
        raw = engine.raw_connection()
        conn = raw.driver_connection  # psycopg's own connection
        raw.detach()  # ours for good, outside the pool
        conn.rollback()  # notifications arrive outside transactions only
        conn.autocommit = True
        conn.execute(f"LISTEN {CHANNEL}")
        self._conn = conn
        self._stop_r, self._stop_w = os.pipe()

    def wait(self, timeout: float) -> bool:
        """Block until a notification arrives (True), ``timeout`` passes or ``interrupt``
        is called (False). Runs in a thread of its own."""
        ready, _, _ = io_select.select([self._conn.fileno(), self._stop_r], [], [], timeout)
        if self._stop_r in ready or not ready:
            return False
        self._conn.execute("SELECT 1")  # takes the notifications in
        return True

    def interrupt(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
