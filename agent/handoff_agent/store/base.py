"""The transaction discipline every store method follows.

``transaction()`` opens one database transaction per thread; a store method called inside it
joins it (no savepoint), so a service can make several changes and their audit rows commit or
roll back together. Outside one, each method is its own transaction. Reads outside a
transaction use a read-only connection that never waits for a writer on SQLite.
"""

from __future__ import annotations

import contextlib
import threading

from sqlalchemy import Connection, Engine
from sqlalchemy.dialects import postgresql, sqlite

from .engine import READ


class StoreBase:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect = engine.dialect.name
        self._local = threading.local()

    @property
    def backend(self) -> str:
        return self.dialect

    @contextlib.contextmanager
    def transaction(self):
        """One transaction for everything inside, in this thread."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as conn:
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    _tx = transaction

    @contextlib.contextmanager
    def savepoint(self):
        """Inside ``transaction()``: when the block raises, undo what it did, and only that
        (the rest of the transaction commits). Lets one commit carry several callers' work."""
        sp = self._local.conn.begin_nested()
        try:
            yield
        except BaseException:
            sp.rollback()
            raise
        sp.commit()

    @contextlib.contextmanager
    def _read(self):
        """A read joins the thread's transaction or read; else it checks out one connection,
        which the reads nested in it share (one checkout per request, not one per query).
        On PostgreSQL it runs without a transaction: under READ COMMITTED each statement has
        its own snapshot anyway, and BEGIN and ROLLBACK would each cost a round trip."""
        conn = getattr(self._local, "conn", None) or getattr(self._local, "read", None)
        if conn is not None:
            yield conn
            return
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":  # no BEGIN/ROLLBACK round trips for a read
                conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execution_options(**{READ: True})
            self._local.read = conn
            try:
                yield conn
            finally:
                self._local.read = None

    def _insert(self, table):
        """An INSERT that knows ``on_conflict_do_nothing`` / ``_do_update`` on this backend."""
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)

    def analyze(self) -> None:
        """Refresh the planner's statistics (after a bulk import; autovacuum does it later)."""
        from sqlalchemy import text

        with self._tx() as c:
            c.execute(text("ANALYZE"))

    def ping(self) -> None:
        """One round trip to the database, for readiness: raises what an outage raises."""
        from sqlalchemy import text

        with self._read() as c:
            c.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()


def one(conn: Connection, stmt, params=None):
    return conn.execute(stmt, params or {}).first()
