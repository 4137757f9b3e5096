"""Engines for the two backends: SQLite (embedded default) and PostgreSQL (past one machine).

SQLite gets WAL, synchronous=FULL, foreign keys and a busy timeout on every connection, and
every write transaction starts with BEGIN IMMEDIATE, so two writers never both read and then
both write. Reads start a plain BEGIN and never wait for a writer (WAL).
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import URL, Engine, make_url

READ = "handoff_read"  # execution option: this connection only reads
IDLE_PING = 10.0  # seconds idle after which a pooled PostgreSQL connection is checked first


def sqlite_url(path: Path | str) -> str:
    return f"sqlite:///{Path(path)}"


def normalize(url: str) -> URL:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's default would be psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def redact(url: str | URL) -> str:
    """The URL as it may appear in logs and status: never with its password."""
    try:
        return make_url(str(url) if isinstance(url, URL) else url).render_as_string(
            hide_password=True
        )
    except Exception:  # not even a URL: say nothing of it
        return "<unparseable database url>"


def make_engine(url: str) -> Engine:
    parsed = normalize(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite(parsed)
    if parsed.get_backend_name() == "postgresql":
        try:
            engine = create_engine(parsed, pool_size=5, max_overflow=5, pool_recycle=3600)
        except ImportError:
            raise ValueError(
                "PostgreSQL needs psycopg 3: pip install 'jupyter-handoff[postgres]'"
            ) from None
        _ping_when_idle(engine)
        return engine
    raise ValueError(
        f"Unsupported database URL {redact(parsed)}: use sqlite:///PATH or postgresql://…"
    )


def _ping_when_idle(engine: Engine, idle: float = IDLE_PING) -> None:
    """Check a pooled connection before use only when it sat idle a while (the server may
    have restarted or a firewall dropped it). ``pool_pre_ping`` would ping on every
    checkout: one more round trip per request, a millisecond or more on a busy machine."""

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, proxy):
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since > idle:
            try:
                dbapi_conn.execute("SELECT 1")
                dbapi_conn.rollback()
            except Exception as e:  # dead: the pool connects afresh (exc.DisconnectionError)
                raise exc.DisconnectionError(str(e)) from e


def _sqlite(url: URL) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        read = conn.get_execution_options().get(READ)
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    return engine
