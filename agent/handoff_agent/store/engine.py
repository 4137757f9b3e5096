"""Engines for the two backends: SQLite (embedded default) and PostgreSQL (past one machine).

SQLite gets WAL, synchronous=FULL, foreign keys and a busy timeout on every connection, and
every write transaction starts with BEGIN IMMEDIATE, so two writers never both read and then
both write. Reads start a plain BEGIN and never wait for a writer (WAL). A writer that still
finds the database locked after the busy timeout (two agents on one file, a long backup)
becomes ``Unavailable`` (503 with Retry-After), never a 500: see ``unavailable``. PostgreSQL
gets the same bound as its ``lock_timeout`` (``_bound_lock_waits``).

The busy timeout counts from when the caller asked (``asked_at``), not from when the agent's
one writer thread reached its write: writes queued behind each other while another process
holds the lock each get their answer within the timeout, not after the sum of theirs.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import URL, Engine, make_url

from ..errors import Unavailable

READ = "handoff_read"  # execution option: this connection only reads
BUSY_TIMEOUT = 30.0  # seconds a SQLite writer waits for another one's lock
# PostgreSQL states that mean "try again soon": lock not available, serialization failure,
# deadlock, the server starting or shutting down; class 08 is a lost or refused connection.
RETRYABLE_SQLSTATES = ("55P03", "40001", "40P01", "57P01", "57P03")
IDLE_PING = 10.0  # seconds idle after which a pooled PostgreSQL connection is checked first
_asked = threading.local()  # .at: time.monotonic() when this thread's write was asked for


def sqlite_url(path: Path | str) -> str:
    return f"sqlite:///{Path(path)}"


class BadDatabaseURL(ValueError):
    """A database URL that cannot be used: every command says it in one line."""


def normalize(url: str) -> URL:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's default would be psycopg2)."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        # The value is not repeated: it may be a password pasted in the wrong place.
        raise BadDatabaseURL(
            "The database URL is not a URL: use sqlite:///PATH or "
            "postgresql://USER@HOST/DATABASE (--database-url, c.HandoffAgent.database_url)."
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


SECRET_PARAM = re.compile(r"([?&](?:password|passwd|pwd|sslpassword)=)[^&]*", re.IGNORECASE)


def redact(url: str | URL) -> str:
    """The URL as it may appear in logs and status: never with its password, in the user
    part or as a query parameter (``?password=``, libpq's and kin)."""
    try:
        shown = make_url(str(url) if isinstance(url, URL) else url).render_as_string(
            hide_password=True
        )
    except Exception:  # not even a URL: say nothing of it
        return "<unparseable database url>"
    return SECRET_PARAM.sub(r"\1***", shown)


def make_engine(url: str, busy_timeout: float = BUSY_TIMEOUT) -> Engine:
    """``busy_timeout``: seconds a writer waits for another's lock before giving up (SQLite's
    busy timeout, PostgreSQL's lock_timeout)."""
    parsed = normalize(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite(parsed, busy_timeout)
    if parsed.get_backend_name() == "postgresql":
        try:
            engine = create_engine(parsed, pool_size=5, max_overflow=5, pool_recycle=3600)
        except ImportError:
            raise BadDatabaseURL(
                "PostgreSQL needs psycopg 3: pip install 'jupyter-handoff[postgres]'"
            ) from None
        _ping_when_idle(engine)
        _bound_lock_waits(engine, busy_timeout)
        return engine
    raise BadDatabaseURL(
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


def _bound_lock_waits(engine: Engine, busy_timeout: float) -> None:
    """PostgreSQL's ``lock_timeout``, SQLite's busy timeout's counterpart: a statement that
    waits for a row or table lock another session holds (another replica's or a script's
    long transaction) gives up after ``busy_timeout`` with SQLSTATE 55P03, which
    ``unavailable`` answers 503 ``database_busy``, instead of waiting without bound. Set once
    per connection; a write that queued (``asked_at``) waits only what is left, for its own
    transaction (SET LOCAL). 0 would mean no bound: at least 1 ms."""
    full = max(int(busy_timeout * 1000), 1)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, record):
        dbapi_conn.execute(f"SET lock_timeout = {full}")
        dbapi_conn.commit()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        if conn.get_execution_options().get(READ):
            return
        wait = _wait_ms(busy_timeout)
        if wait < full:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(wait, 1)}")


@contextlib.contextmanager
def asked_at(at: float):
    """Writes begun in this block (this thread) wait for another process's lock only
    what is left of the busy timeout since ``at`` (``time.monotonic()``), when their caller
    asked: one that queued behind other writes while the lock was held tries once more and
    is answered 503 at once, rather than waiting a whole timeout of its own."""
    before = getattr(_asked, "at", None)
    _asked.at = at
    try:
        yield
    finally:
        _asked.at = before


def _wait_ms(busy_timeout: float) -> int:
    """This thread's next write's wait for the lock, in ms (``asked_at``). The whole timeout
    when it was asked for this very moment (to within 0.1 s), so that an uncontended write
    does not set it anew each time."""
    full = int(busy_timeout * 1000)
    at = getattr(_asked, "at", None)
    if at is None:
        return full
    left = int((busy_timeout - (time.monotonic() - at)) * 1000)
    return full if left > full - 100 else max(left, 0)


def _sqlite(url: URL, busy_timeout: float) -> Engine:
    path = url.database
    if path and path != ":memory:" and not path.startswith("file:"):
        directory = Path(path).parent
        if not directory.is_dir():  # else SQLAlchemy's "unable to open database file", 40 lines
            raise BadDatabaseURL(
                f"No directory {directory} for the SQLite database {path} "
                "(c.HandoffAgent.database_url, --database-url): create it, or fix the path."
            )
    connect_args = {"check_same_thread": False, "timeout": busy_timeout}
    engine = create_engine(url, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        # First, so that switching to WAL waits for another process's lock too.
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        record.info["busy_ms"] = int(busy_timeout * 1000)
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        read = conn.get_execution_options().get(READ)
        wait = int(busy_timeout * 1000) if read else _wait_ms(busy_timeout)
        fairy = conn.connection
        if fairy.info.get("busy_ms") != wait:  # set only when it changes: cheap, but per write
            fairy.dbapi_connection.execute(f"PRAGMA busy_timeout={wait}")
            fairy.info["busy_ms"] = wait
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    return engine


def _connection_refused(error: exc.DBAPIError) -> bool:
    """PostgreSQL could not be reached at all (down, restarting, a network cut): psycopg's
    connect fails with an OperationalError that carries no SQLSTATE, the server never having
    answered, and SQLAlchemy does not count a failed connect as an invalidated connection."""
    orig = error.orig
    return (
        isinstance(error, exc.OperationalError)
        and type(orig).__module__.split(".")[0] == "psycopg"
        and not getattr(orig, "sqlstate", None)
    )


def outage_line(error: BaseException) -> str | None:
    """What a command says, in one line, when ``error`` is the database out of reach or
    locked (``unavailable``); None for any other error."""
    if unavailable(error) is None:
        return None
    lines = [s.strip() for s in str(error.orig).splitlines() if s.strip()]
    cause = lines[0] if lines else type(error.orig).__name__
    if _refused_login(str(error.orig)):  # waiting will not fix it: the URL is wrong
        return (
            f"The database refused the connection ({cause}). Nothing was changed: check the "
            "URL's user, password and database name (--database-url)."
        )
    return (
        f"The database is unreachable or locked ({cause}). Nothing was changed: start it (or "
        "let the other writer finish), then run the command again."
    )


def unreadable_line(error: BaseException) -> str | None:
    """One line when ``error`` is a database file that is not one, or is damaged (SQLite's
    "file is not a database", "disk image is malformed"); None for any other error."""
    if not isinstance(error, exc.DatabaseError) or isinstance(error, exc.OperationalError):
        return None
    cause = (str(error.orig).strip().splitlines() or [type(error.orig).__name__])[0]
    if "not a database" not in cause and "malformed" not in cause:
        return None
    return (
        f"The database cannot be read ({cause}). Nothing was changed: restore the home from a "
        "backup (`jupyter handoff backup --verify DIR`, then `restore DIR --force`)."
    )


def existing(url: str) -> str:
    """``url``, refused when it names a SQLite file that is not there: a command that reads a
    home's stores would make an empty database and report on that."""
    parsed = normalize(url)
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not Path(path).is_file():
        raise BadDatabaseURL(
            f"No database at {path} (--database-url). Check the path: only `serve` makes a new one."
        )
    return url


def _refused_login(text: str) -> bool:
    """PostgreSQL refusing who connects, or to what: a wrong password, user or database."""
    text = text.lower()
    return (
        "password authentication failed" in text
        or ("database" in text and "does not exist" in text)
        or ("role" in text and "does not exist" in text)
    )


def unavailable(error: BaseException) -> Unavailable | None:
    """The 503 a database error deserves when waiting and retrying will fix it (SQLite still
    locked after the busy timeout; PostgreSQL lock, serialization or connection trouble), or
    None for any other error."""
    if not isinstance(error, exc.DBAPIError):
        return None
    orig = error.orig
    text = str(orig).lower()
    state = getattr(orig, "sqlstate", None) or ""
    if "database is locked" in text or "database table is locked" in text:
        why = "The database is locked by another writer (another agent on the same file?)."
    elif (
        state in RETRYABLE_SQLSTATES
        or state.startswith("08")
        or error.connection_invalidated
        or _connection_refused(error)
    ):
        why = "The database is busy or unreachable."
    else:
        return None
    return Unavailable(
        f"{why} Nothing was changed; try again shortly.",
        "Retry after the Retry-After header's seconds. If it persists, check what else holds "
        "the database (`jupyter handoff status`).",
        code="database_busy",
    )
