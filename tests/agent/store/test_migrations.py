"""Upgrading a home made before the store (sqlite-utils, migrations m001-m005): every row
stays, the audit chain still verifies, and the agent's tools work on it."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from handoff_agent.store.metadata import MetadataStore
from handoff_agent.store.migrations import MIGRATIONS

OLD_HOME = Path(__file__).parents[1] / "data" / "home-v5"
OLD_TABLES = [
    "models",
    "versions",
    "datasets",
    "lineage",
    "check_runs",
    "audit",
    "reports",
    "stages",
    "signoffs",
    "outbox",
    "tokens",
    "deliveries",
    "sources",
    "trust",
    "trust_waits",
]


def rows(db: Path, table: str) -> list[tuple]:
    with sqlite3.connect(db) as c:
        cols = [r[1] for r in c.execute(f"pragma table_info({table})")]
        old = [
            r[1]
            for r in sqlite3.connect(OLD_HOME / "registry.db").execute(
                f"pragma table_info({table})"
            )
        ]
        keep = [x for x in cols if x in old]
        return sorted(c.execute(f"select {', '.join(keep)} from {table}").fetchall(), key=repr)


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "handoff_agent", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_old_home_upgrades_with_nothing_lost(tmp_path):
    home = tmp_path / "home"
    shutil.copytree(OLD_HOME, home)
    before = {t: rows(OLD_HOME / "registry.db", t) for t in OLD_TABLES}
    assert all(before[t] for t in OLD_TABLES)  # the fixture has rows in every table

    p = cli(home, "audit", "verify", "--agent-role", "central")  # opens, so migrates
    assert p.returncode == 0, p.stdout + p.stderr
    assert "audit: OK (26 entries" in p.stdout

    after = {t: rows(home / "registry.db", t) for t in OLD_TABLES}
    assert after == before
    store = MetadataStore.for_home(home)
    try:
        names = {
            r[0]
            for r in sqlite3.connect(home / "registry.db").execute(
                "select name from schema_migrations"
            )
        }
        assert names == {n for n, _ in MIGRATIONS}
        # The chain goes on from the old head, and old and new rows verify together.
        head = store.audit_head()
        store.audit_append("test", "after.upgrade", "x", {})
        assert store.audit_head()["seq"] == head["seq"] + 1
        assert store.audit_first_bad() is None
        v = store.get_version("churn", 1)
        assert v["stage"] == "approved" and [s["user"] for s in v["signoffs"]] == ["rita"]
        assert [c["status"] for c in v["checks"]] == ["pass", "pass"]
        assert store.trust_names() == ["sklearn.linear_model.LogisticRegression"]
        assert store.trust_waiting()[0]["types"] == ["mypkg.Other"]
        assert store.delivery_seen("d" * 32)["version"] == 1
        assert {r["state"] for r in store.outbox_summary()} == {"delivered", "pending", "dead"}
    finally:
        store.close()
    # Opening again applies nothing twice.
    assert cli(home, "audit", "verify").returncode == 0


def test_m014_adds_the_watch_target_and_the_revalidations_table(tmp_path, backend):
    """A database at m013 (no ``data_sources.target``, no ``revalidations``) upgrades on each
    backend; a watch's target and a revalidation are stored after."""
    from sqlalchemy import inspect, text

    from handoff_agent.store.migrations import upgrade

    store = MetadataStore.for_home(tmp_path, backend.database_url() or "")
    try:
        with store.engine.begin() as c:
            c.execute(text("DROP TABLE revalidations"))
            c.execute(text("ALTER TABLE data_sources DROP COLUMN target"))
            c.execute(text("DELETE FROM schema_migrations WHERE name = 'm014_revalidations'"))
        assert upgrade(store.engine) == ["m014_revalidations"]
        insp = inspect(store.engine)
        assert "target" in {c["name"] for c in insp.get_columns("data_sources")}
        assert "revalidations" in insp.get_table_names()
        spec = {"model": "churn", "kind": "file", "source": "/d.csv", "every": 60.0}
        row = store.watch_add(
            {**spec, "on": ["change"], "actions": ["revalidate"], "target": "y"}, "t"
        )
        assert row["target"] == "y"
    finally:
        store.engine.dispose()


def test_m015_adds_the_pruned_mark(tmp_path, backend):
    """A database at m014 (no ``versions.pruned``) upgrades on each backend; its versions are
    unpruned, and retention can mark one after."""
    from sqlalchemy import inspect, text

    from handoff_agent.store.migrations import upgrade

    store = MetadataStore.for_home(tmp_path, backend.database_url() or "")
    try:
        with store.engine.begin() as c:
            c.execute(text("ALTER TABLE versions DROP COLUMN pruned"))
            c.execute(text("DELETE FROM schema_migrations WHERE name = 'm015_pruned'"))
        assert upgrade(store.engine) == ["m015_pruned"]
        assert "pruned" in {c["name"] for c in inspect(store.engine).get_columns("versions")}
    finally:
        store.engine.dispose()


def test_m017_adds_the_segment_quarantine_mark(tmp_path, backend):
    """A database at m016 (no ``prediction_segments.quarantined``) upgrades on each backend;
    its segments stay readable, and the monitor can quarantine one after, with its audit row."""
    from sqlalchemy import inspect, text

    from handoff_agent.store.migrations import upgrade

    store = MetadataStore.for_home(tmp_path, backend.database_url() or "")
    try:
        with store.engine.begin() as c:
            c.execute(text("ALTER TABLE prediction_segments DROP COLUMN quarantined"))
            c.execute(text("DELETE FROM schema_migrations WHERE name = 'm017_segment_quarantine'"))
        store.segment_add("churn", "a" * 64, 5, 100, 1.0, 2.0)  # names no new column
        assert upgrade(store.engine) == ["m017_segment_quarantine"]
        cols = {c["name"] for c in inspect(store.engine).get_columns("prediction_segments")}
        assert "quarantined" in cols
        (segment,) = store.segments_of("churn")
        assert segment["quarantined"] is None
        assert store.segment_quarantine("churn", segment, "corrupt")
        assert not store.segment_quarantine("churn", segment, "corrupt")  # once only
        assert store.segments_of("churn")[0]["quarantined"] == "corrupt"
        assert store.audit_first_bad() is None
    finally:
        store.engine.dispose()


def test_m019_adds_the_claims_of_owed_triggers(tmp_path, backend):
    """A database at m018 (triggers without claims) upgrades on each backend; its triggers
    stay as they were, and a change's actions are stored pending with its snapshot after."""
    from sqlalchemy import inspect, text

    from handoff_agent.store.migrations import upgrade

    store = MetadataStore.for_home(tmp_path, backend.database_url() or "")
    try:
        spec = {"model": "churn", "kind": "file", "source": "/d.csv", "every": 60.0}
        src = store.watch_add({**spec, "on": ["change"], "actions": ["alert"]}, "t")
        with store.engine.begin() as c:
            c.execute(text("ALTER TABLE triggers DROP COLUMN claimed_by"))
            c.execute(text("ALTER TABLE triggers DROP COLUMN claimed_until"))
            c.execute(text("DELETE FROM schema_migrations WHERE name = 'm019_owed_triggers'"))
        old = store.trigger_add(src["id"], None, "appended", "alert", "done", {})
        assert upgrade(store.engine) == ["m019_owed_triggers"]
        cols = {c["name"] for c in inspect(store.engine).get_columns("triggers")}
        assert {"claimed_by", "claimed_until"} <= cols
        assert [(t["id"], t["state"]) for t in store.triggers_of(src["id"])] == [(old, "done")]
        fp = {"fingerprint": "f1"}
        snap = store.snapshot_add(src["id"], fp, "appended", None, {}, None, ("alert",), "a", 1.0)
        assert store.triggers_of(src["id"])[-1]["state"] == "pending" and snap["owed"]
    finally:
        store.engine.dispose()


def test_m020_adds_token_expiry_and_last_use(tmp_path, backend):
    """A database at m019 (tokens without expiry) upgrades on each backend; its tokens keep
    working, never expiring, never seen used, until a use is noted."""
    from sqlalchemy import inspect, text

    from handoff_agent import tokens
    from handoff_agent.store.migrations import upgrade

    store = MetadataStore.for_home(tmp_path, backend.database_url() or "")
    try:
        with store.engine.begin() as c:
            c.execute(text("ALTER TABLE tokens DROP COLUMN expires"))
            c.execute(text("ALTER TABLE tokens DROP COLUMN last_used"))
            c.execute(text("DELETE FROM schema_migrations WHERE name = 'm020_token_expiry'"))
            c.execute(
                text(
                    'INSERT INTO tokens (hash, "user", roles, created, revoked) '
                    "VALUES (:h, 'old', '[\"analyst\"]', '2025-01-01T00:00:00+00:00', 0)"
                ),
                {"h": tokens.token_hash("old-token")},
            )
        assert upgrade(store.engine) == ["m020_token_expiry"]
        cols = {c["name"] for c in inspect(store.engine).get_columns("tokens")}
        assert {"expires", "last_used"} <= cols
        found = tokens.lookup(store, tokens.token_hash("old-token"))
        assert found == {"user": "old", "roles": ["analyst"]}
        (row,) = store.tokens()
        assert (row["expires"], row["last_used"]) == (None, None)
        tokens.note_use(store, tokens.token_hash("old-token"))
        assert store.tokens()[0]["last_used"] is not None
    finally:
        store.engine.dispose()


def test_a_database_a_newer_handoff_upgraded_is_refused_in_one_line(tmp_path):
    """An older Handoff on a home a newer one migrated would write rows it cannot know."""
    MetadataStore.for_home(tmp_path).close()
    with sqlite3.connect(tmp_path / "registry.db") as c:
        c.execute("insert into schema_migrations (name, applied) values ('m999_future', 0)")
    p = cli(tmp_path, "audit", "verify")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines() == [
        "The database was upgraded by a newer Handoff (its schema has m999_future, this "
        f"Handoff knows up to {MIGRATIONS[-1][0]}): run that version, or restore a backup made "
        "before the upgrade. Nothing was changed."
    ]


def test_a_command_does_not_upgrade_a_home_an_older_agent_serves(tmp_path):
    """IT upgrades the package and runs `audit verify` before restarting the agent: the
    schema is not migrated under the older agent still serving the home."""
    from support import RunningAgent

    agent = RunningAgent(tmp_path / "home", tmp_path / "rt", [], database_url=None)
    agent.start()
    last = MIGRATIONS[-1][0]
    try:
        with sqlite3.connect(agent.home / "registry.db") as c:  # as an older Handoff left it
            c.execute("delete from schema_migrations where name = ?", (last,))
        p = cli(agent.home, "audit", "verify")
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        assert p.stderr.strip().splitlines() == [
            f"The agent serving {agent.home} (pid {agent.proc.pid}) runs an older Handoff: its "
            f"schema lacks {last}. Stop it and start it with this Handoff, which upgrades the "
            "schema, then run this again. Nothing was changed."
        ]
    finally:
        agent.stop()
    done = sqlite3.connect(agent.home / "registry.db").execute("select name from schema_migrations")
    assert last not in {r[0] for r in done}  # nothing was changed under it
    assert cli(agent.home, "audit", "verify").returncode == 0  # stopped: the command upgrades


def test_m021_adds_the_signing_keys_table(tmp_path, backend):
    """A database at m020 upgrades on each backend; central's next start records its key,
    and a different key later retires it, with its audit row."""
    from sqlalchemy import text

    from handoff_agent.store.migrations import upgrade

    store = MetadataStore.for_home(tmp_path, backend.database_url() or "")
    try:
        with store.engine.begin() as c:
            c.execute(text("DROP TABLE signing_keys"))
            c.execute(text("DELETE FROM schema_migrations WHERE name = 'm021_signing_keys'"))
        assert upgrade(store.engine) == ["m021_signing_keys"]
        assert store.signing_key_in_use("k1", "cHVi", "agent") == []
        assert store.signing_key_in_use("k2", "cHViMg==", "agent") == ["k1"]
        listed = store.signing_key_list()
        assert [(k["key_id"], bool(k["retired"])) for k in listed] == [("k2", False), ("k1", True)]
        assert store.audit_head()["seq"] == 1  # the one retirement
    finally:
        store.engine.dispose()


AUDIT_INDEXES = {"idx_audit_subject", "idx_audit_actor", "idx_audit_action", "idx_audit_time"}


def test_m022_indexes_the_audit_logs_filters(tmp_path, backend):
    """A database at m021 upgrades on each backend; then every filter of GET /api/v1/audit
    is served by an index (SQLite's plan names it; no filter reads the whole chain), and
    the prefix matches the indexes serve still match exactly what they did."""
    from sqlalchemy import text

    from handoff_agent.store.migrations import upgrade

    store = MetadataStore.for_home(tmp_path, backend.database_url() or "")
    try:
        with store.engine.begin() as c:
            for name in AUDIT_INDEXES:
                c.execute(text(f"DROP INDEX {name}"))
            c.execute(text("DELETE FROM schema_migrations WHERE name = 'm022_audit_indexes'"))
        assert upgrade(store.engine) == ["m022_audit_indexes"]
        catalog = (
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit'"
            if store.dialect == "sqlite"
            else "SELECT indexname FROM pg_indexes WHERE tablename = 'audit'"
        )
        with store.engine.connect() as c:
            assert set(c.execute(text(catalog)).scalars()) >= AUDIT_INDEXES
        # Given entries whose subjects and actions look alike
        for actor, action, subject in [
            ("Bob", "stage.enter", "churn"),
            ("bob", "stage", "churn:1"),
            ("eve", "stagex.y", "churn:10"),
            ("eve", "stage.mirror", "churnx:1"),
            ("eve", "signoff", "Churn:1"),
            ("eve", "signoff", "churn;"),
            ("eve", "signoff", "a_b:1"),
            ("eve", "signoff", "aXb:1"),
        ]:
            store.audit_append(actor, action, subject, {})

        def seqs(**filters):
            return [r["seq"] for r in store.audit_page(**filters)]

        # Then each filter matches as before: a model its versions, case-sensitively
        assert seqs(subject="churn") == [1, 2, 3]
        assert seqs(subject="churn:1") == [2]
        assert seqs(subject="a_b") == [7]  # _ is a character, not a wildcard
        assert seqs(action="stage") == [1, 2, 4]
        assert seqs(actor="BOB") == [1, 2]
        assert seqs(subject="churn", after=1) == [2, 3]
        if store.dialect != "sqlite":
            return
        # and on SQLite each is an index's search, never a scan of the chain
        queries = {
            "subject=churn": {"subject": "churn"},
            "subject=churn:1": {"subject": "churn:1"},
            "actor=bob": {"actor": "bob"},
            "action=stage": {"action": "stage"},
            "since=2026-12-01": {"since": "2026-12-01T00:00:00+00:00"},
            "since&until": {"since": "2026-12-01", "until": "2026-12-02"},
        }
        for what, filters in queries.items():
            q = store.audit_select(**filters).limit(101)
            sql = str(q.compile(store.engine, compile_kwargs={"literal_binds": True}))
            with store.engine.connect() as c:
                plan = [r[-1] for r in c.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
            assert any("USING INDEX idx_audit_" in step for step in plan), (what, plan)
            assert not any(step.startswith("SCAN audit") for step in plan), (what, plan)
    finally:
        store.engine.dispose()
