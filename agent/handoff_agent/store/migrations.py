"""Schema migrations, one ordered list for both backends, recorded in ``schema_migrations``.

A fresh database gets the whole schema from ``tables`` and every migration recorded as done.
A home made before the store (sqlite-utils recorded m001-m005 in ``_sqlite_migrations``)
keeps every row: those five are adopted as done and the later ones run. Add a migration to
the end; never edit one that shipped. At head, opening costs one query.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, Engine, inspect, select, text
from sqlalchemy.schema import CreateIndex

from . import tables as t
from ._util import now
from .versions import CHECK_LEASE

# m001-m005: the schema sqlite-utils built (see git history of schema.py).
LEGACY = (
    "m001_initial",
    "m002_verdicts_and_reports",
    "m003_pipeline",
    "m004_delivery_body_digest",
    "m005_trust_list",
)
LOCK_ID = 0x48414E44  # PostgreSQL advisory lock: one replica migrates at a time


def m006_store(conn: Connection) -> None:
    """The chain head row, the events table, and outbox and check claims for many writers."""
    t.audit_head.create(conn)
    last = conn.execute(
        select(t.audit.c.seq, t.audit.c.hash).order_by(t.audit.c.seq.desc())
    ).first()
    conn.execute(
        t.audit_head.insert().values(
            id=1, seq=last[0] if last else 0, hash=last[1] if last else "0" * 64
        )
    )
    t.events.create(conn)
    conn.execute(text("ALTER TABLE outbox ADD COLUMN claimed_by TEXT"))
    conn.execute(text("ALTER TABLE check_runs ADD COLUMN claimed_by TEXT"))
    conn.execute(text("ALTER TABLE outbox ADD COLUMN claimed_until FLOAT"))


def m007_serving(conn: Connection) -> None:
    """The model server's state: slots per endpoint, feedback labels, prediction-log segments;
    and a token's model scope (consumers)."""
    for table in (t.deployments, t.feedback, t.prediction_segments):
        table.create(conn)
    conn.execute(text("ALTER TABLE tokens ADD COLUMN models TEXT"))


def m008_serving_stats(conn: Connection) -> None:
    """Each replica's serving counters, merged by every reader; the guardrails' decisions."""
    for table in (t.serving_stats, t.guardrail_events):
        table.create(conn)


def m009_validation(conn: Connection) -> None:
    """What entering validated ran: ONNX conversion with parity, the load test and its gate."""
    t.validations.create(conn)


def m010_monitor(conn: Connection) -> None:
    """Monitoring: closed windows as time series, alerts, and each model's reference."""
    for table in (t.monitor_windows, t.alerts, t.monitor_references):
        table.create(conn)


def m011_sources(conn: Connection) -> None:
    """Watched data sources, their fingerprint history, and what their changes triggered."""
    for table in (t.data_sources, t.source_snapshots, t.triggers):
        table.create(conn)


def m012_check_provisional(conn: Connection) -> None:
    """A checking version's provisional verdict (the checks run in parallel, issue 13)."""
    conn.execute(text("ALTER TABLE versions ADD COLUMN provisional TEXT"))


def m013_watch_overdue(conn: Connection) -> None:
    """A watched source's expected period between updates (``--overdue 26h``). A home that
    ran m011 just now already has it: m011 creates the table as ``tables`` declares it."""
    if "overdue" not in {c["name"] for c in inspect(conn).get_columns("data_sources")}:
        conn.execute(text("ALTER TABLE data_sources ADD COLUMN overdue FLOAT"))


def m014_revalidations(conn: Connection) -> None:
    """The revalidate action: a watch's target column, and each re-run of a version's checks
    on a source's new data (no new version; the version's own check rows stay as they were)."""
    if "target" not in {c["name"] for c in inspect(conn).get_columns("data_sources")}:
        conn.execute(text("ALTER TABLE data_sources ADD COLUMN target TEXT"))
    t.revalidations.create(conn)


def m015_pruned(conn: Connection) -> None:
    """Retention: when a version's bundle was removed (``jupyter handoff prune``)."""
    conn.execute(text("ALTER TABLE versions ADD COLUMN pruned TEXT"))


def m016_check_lease(conn: Connection) -> None:
    """A check run's claim lapses unless its replica renews it: a replica that died for good
    no longer holds its checks forever. Claims held now get one lease from the upgrade."""
    conn.execute(text("ALTER TABLE check_runs ADD COLUMN claimed_until FLOAT"))
    conn.execute(
        text(
            "UPDATE check_runs SET claimed_until = :until WHERE claimed_by IS NOT NULL "
            "AND status IN ('queued', 'running')"
        ),
        {"until": time.time() + CHECK_LEASE},
    )


def m017_segment_quarantine(conn: Connection) -> None:
    """A prediction-log segment the monitor cannot read (its bytes corrupt): set aside, so
    monitoring goes on with the rest instead of failing on it every run. A home that ran m007
    just now already has it: m007 creates the table as ``tables`` declares it."""
    if "quarantined" not in {c["name"] for c in inspect(conn).get_columns("prediction_segments")}:
        conn.execute(text("ALTER TABLE prediction_segments ADD COLUMN quarantined TEXT"))


def m018_notices(conn: Connection) -> None:
    """Webhook notices kept until taken or given up, so a restart does not drop a retry."""
    t.notices.create(conn, checkfirst=True)


def m019_owed_triggers(conn: Connection) -> None:
    """A change's actions are stored with its snapshot, pending until carried out, so a kill
    between the two no longer loses them. A home that ran m011 just now already has these."""
    have = {c["name"] for c in inspect(conn).get_columns("triggers")}
    for name, kind in (("claimed_by", "TEXT"), ("claimed_until", "FLOAT")):
        if name not in have:
            conn.execute(text(f"ALTER TABLE triggers ADD COLUMN {name} {kind}"))


def m020_token_expiry(conn: Connection) -> None:
    """A token's expiry and when it was last used: IT can see a token nobody uses, and a
    leaked one stops by itself. Tokens made before keep working (their expiry is NULL)."""
    have = {c["name"] for c in inspect(conn).get_columns("tokens")}
    for name in ("expires", "last_used"):
        if name not in have:
            conn.execute(text(f"ALTER TABLE tokens ADD COLUMN {name} TEXT"))


def m021_signing_keys(conn: Connection) -> None:
    """The public keys central signed with, retired ones kept: a dossier signed before a key
    rotation still verifies, and replicas agree on which key is current."""
    t.signing_keys.create(conn, checkfirst=True)


def m022_audit_indexes(conn: Connection) -> None:
    """Indexes for the audit log's filters (subject, actor, action, since and until), so
    ``GET /api/v1/audit?subject=churn`` no longer reads the whole chain."""
    for index in t.audit.indexes:  # IF NOT EXISTS: reflection misses lower(actor) on SQLite
        conn.execute(CreateIndex(index, if_not_exists=True))


MIGRATIONS = [(name, None) for name in LEGACY] + [
    ("m006_store", m006_store),
    ("m007_serving", m007_serving),
    ("m008_serving_stats", m008_serving_stats),
    ("m009_validation", m009_validation),
    ("m010_monitor", m010_monitor),
    ("m011_sources", m011_sources),
    ("m012_check_provisional", m012_check_provisional),
    ("m013_watch_overdue", m013_watch_overdue),
    ("m014_revalidations", m014_revalidations),
    ("m015_pruned", m015_pruned),
    ("m016_check_lease", m016_check_lease),
    ("m017_segment_quarantine", m017_segment_quarantine),
    ("m018_notices", m018_notices),
    ("m019_owed_triggers", m019_owed_triggers),
    ("m020_token_expiry", m020_token_expiry),
    ("m021_signing_keys", m021_signing_keys),
    ("m022_audit_indexes", m022_audit_indexes),
]


class SchemaNewer(RuntimeError):
    """A database a newer Handoff has migrated: this one would write rows it cannot know."""


def _refuse_newer(done: set[str], names: list[str]) -> None:
    unknown = sorted(done - set(names))
    if unknown:
        raise SchemaNewer(
            f"The database was upgraded by a newer Handoff (its schema has {unknown[-1]}, "
            f"this Handoff knows up to {names[-1]}): run that version, or restore a backup "
            "made before the upgrade. Nothing was changed."
        )


def _applied(engine: Engine) -> set[str]:
    """The migrations the database records (none before it has the table)."""
    try:
        with engine.connect() as conn:
            return set(conn.execute(select(t.schema_migrations.c.name)).scalars())
    except Exception:  # no schema_migrations table yet
        return set()


def pending(engine: Engine) -> list[str]:
    """The migrations ``upgrade`` would apply to this database (all, for an empty one)."""
    done = _applied(engine)
    return [n for n, _ in MIGRATIONS if n not in done]


def upgrade(engine: Engine) -> list[str]:
    """Bring the schema to head. Returns the names of the migrations applied now."""
    names = [n for n, _ in MIGRATIONS]
    done = _applied(engine)
    _refuse_newer(done, names)
    if set(names) <= done:
        return []
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # another replica's migration runs as long as it needs: wait for it, and for the
            # tables' locks, without the busy timeout's bound
            conn.execute(text("SET LOCAL lock_timeout = 0"))
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_ID})
        existing = set(inspect(conn).get_table_names())
        if "schema_migrations" not in existing:
            t.schema_migrations.create(conn)
            if "models" not in existing:  # a fresh database: the whole schema at once
                t.metadata.create_all(conn)
                conn.execute(t.audit_head.insert().values(id=1, seq=0, hash="0" * 64))
                _record(conn, names)
                return names
            _record(conn, _legacy(conn))
        done = set(conn.execute(select(t.schema_migrations.c.name)).scalars())
        _refuse_newer(done, names)
        applied = []
        for name, fn in MIGRATIONS:
            if name in done:
                continue
            if fn is None:
                raise RuntimeError(
                    f"The database lacks migration {name}, which only old homes had."
                )
            fn(conn)
            _record(conn, [name])
            applied.append(name)
        return applied


def _legacy(conn: Connection) -> list[str]:
    rows = conn.execute(
        text("SELECT name FROM _sqlite_migrations WHERE migration_set = 'handoff'")
    ).scalars()
    return [n for n in rows if n in LEGACY]


def _record(conn: Connection, names) -> None:
    if names:
        conn.execute(t.schema_migrations.insert(), [{"name": n, "applied": now()} for n in names])
