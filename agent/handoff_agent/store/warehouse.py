"""Read a watched SQL source: the user's own database, read only, never Handoff's storage.

It lives here because all SQL lives behind the store package; the watch service only gets
rows, columns and counts back.
"""

from __future__ import annotations

import urllib.parse

import pandas as pd

from .engine import normalize, redact


class QueryFailed(Exception):
    """The source refused or failed the query; the message never holds the URL's password."""


def sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL; None for another database, in memory, or no URL."""
    try:
        parsed = normalize(url)
    except Exception:
        return None
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    return name[len("file:") :].split("?")[0] if name.startswith("file:") else name


def _engine(url: str):
    """SQLite opens read only (a missing file is an error, not a new empty database)."""
    import sqlite3

    from sqlalchemy import create_engine

    path = sqlite_file(url)
    if path is None:
        return create_engine(normalize(url))
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
    return create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True))


def read_query(url: str, query: str, max_rows: int) -> tuple[int, pd.DataFrame, list, str | None]:
    """``(row count, up to max_rows rows, column names, max(updated_at) or None)``."""
    from sqlalchemy import text

    engine = None
    try:
        engine = _engine(url)
        with engine.connect() as c:
            if c.dialect.name == "postgresql":
                c.execute(text("SET TRANSACTION READ ONLY"))
            sub = f"SELECT * FROM ({query}) AS watched"
            rows = c.execute(text(f"SELECT count(*) FROM ({query}) AS watched")).scalar()
            frame = pd.DataFrame(c.execute(text(sub + f" LIMIT {int(max_rows)}")).mappings().all())
            columns = list(c.execute(text(sub + " LIMIT 0")).keys())
            max_updated = None
            if "updated_at" in columns:
                max_updated = c.execute(
                    text(f"SELECT max(updated_at) FROM ({query}) AS w")
                ).scalar()
                max_updated = None if max_updated is None else str(max_updated)
    except Exception as e:  # the driver's message, with the URL's password never in it
        msg = str(getattr(e, "orig", e)).splitlines()[0] if str(e) else type(e).__name__
        raise QueryFailed(f"The query on {redact(url)} failed: {msg}") from None
    finally:
        if engine is not None:
            engine.dispose()
    return rows, frame, columns, max_updated
