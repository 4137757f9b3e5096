"""Engines for the two backends: SQLite (embedded default) and PostgreSQL (past one machine).

SQLite gets WAL, synchronous=FULL, foreign keys and a busy timeout on every connection, and
every write transaction starts with BEGIN IMMEDIATE, so two writers never both read and then
both write. Reads start a plain BEGIN and never wait for a writer (WAL).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url

READ = "handoff_read"  # execution option: this connection only reads


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
            return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5)
        except ImportError:
            raise ValueError(
                "PostgreSQL needs psycopg 3: pip install 'jupyter-handoff[postgres]'"
            ) from None
    raise ValueError(
        f"Unsupported database URL {redact(parsed)}: use sqlite:///PATH or postgresql://…"
    )


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
