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
    def _read(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self.engine.connect() as conn:
            conn.execution_options(**{READ: True})
            yield conn

    def _insert(self, table):
        """An INSERT that knows ``on_conflict_do_nothing`` / ``_do_update`` on this backend."""
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)

    def close(self) -> None:
        self.engine.dispose()


def one(conn: Connection, stmt, params=None):
    return conn.execute(stmt, params or {}).first()
