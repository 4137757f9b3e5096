"""backup / restore on both backends, with a real central holding delivered versions: the round
trip, a tampered backup, and the user's mistakes, each as one line of the CLI."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import uuid

import pytest
from backends import PASSWORD
from s3_support import blob_args
from support import RunningAgent, handoff_cli
from test_pipeline_central import FIRST_SECRET
from test_pipeline_delivery import deliver, envelope

from handoff_agent.store.transfer import DB_FILE

POLICY = f"""
[intake]
trusted_types = []
accept_pickle = false
revalidate = false

[intake.senders]
alice = ["{FIRST_SECRET}"]
"""


def central_at(home, runtime, database_url=..., args=()) -> RunningAgent:
    """A central (not started) on ``home``; its database and blobs follow the test's backend."""
    policy = home.parent / f"{home.name}-policy.toml"
    policy.write_text(POLICY)
    return RunningAgent(
        home,
        runtime,
        ["--role", "central", "--policy", str(policy), *args],
        database_url=database_url,
    )


def populate(central) -> dict:
    """Real deliveries (two models), a token and a trusted type: rows in most tables."""
    ids = {}
    for name, model in [("churn", b"one"), ("churn", b"two"), ("churn", b"three"), ("fraud", b"x")]:
        ids[(name, model)] = uuid.uuid4().hex
        status, body = deliver(central, envelope(name, model), delivery_id=ids[(name, model)])
        assert status == 201, body
    made = central.cli("token", "create", "--user", "bob", "--role", "reviewer", "--expires", "30d")
    assert made.returncode == 0, made.stderr
    ids["token"] = made.stdout.strip()
    assert central.request("GET", "/api/v1/whoami", token=ids["token"])[0] == 200  # last used
    ids["tokens"] = tokens_listed(central)
    assert '"expires": null' not in ids["tokens"] and '"last_used": null' not in ids["tokens"]
    assert (
        central.cli("trust", "add", "sklearn.linear_model._logistic.LogisticRegression").returncode
        == 0
    )
    return ids


def tokens_listed(agent) -> str:
    """`token list --json`: each token's expiry and last use, which a copy must carry."""
    out = agent.cli("token", "list", "--json")
    assert out.returncode == 0, out.stderr
    return out.stdout


def listing(central) -> dict:
    out = {}
    for name in ("churn", "fraud"):
        status, body = central.request("GET", f"/api/v1/models/{name}/versions")
        assert status == 200, body
        out[name] = sorted((v["number"], v["digest"]) for v in body["versions"])
    return out


def cli(agent, *args):
    """The CLI against ``agent``'s home, database and blobs: (exit code, stdout lines, stderr)."""
    out = agent.cli(*args, *blob_args(agent))
    return out.returncode, out.stdout.strip().splitlines(), out.stderr


def assert_one_line(lines, err, *words):
    assert len(lines) == 1, lines
    assert "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines


def assert_refused(lines, err, *words):
    """A refusal: nothing on stdout, and on stderr one line after any progress, no traceback."""
    assert lines == [], lines
    assert_one_line(err.strip().splitlines()[-1:], err, *words)


@pytest.fixture
def central(tmp_path):
    c = central_at(tmp_path / "central", tmp_path / "rt")
    c.start()
    yield c
    c.stop()


def test_backup_restore_round_trip_serves_the_same_versions(tmp_path, central):
    ids = populate(central)
    before = listing(central)
    dest = tmp_path / "backup"

    # Given a backup written while central runs
    code, lines, err = cli(central, "backup", str(dest))
    assert code == 0, (lines, err)
    assert_one_line(lines, err, "written and verified", "4 versions")
    assert sorted(p.name for p in dest.iterdir()) == ["blobs", "manifest.json", DB_FILE]
    code, lines, err = cli(central, "backup", "--verify", str(dest))
    assert code == 0 and lines[0].startswith(f"backup {dest}: OK"), (lines, err)

    # When it is restored into a new home on the same kind of stores
    target = central_at(tmp_path / "restored", tmp_path / "rt2")
    code, lines, err = cli(target, "restore", str(dest))
    assert code == 0, (lines, err)
    assert_one_line(lines, err, "restore into", ": OK (4 versions")
    assert cli(target, "backup", "--verify", str(dest))[0] == 0  # reading it changed nothing
    assert tokens_listed(target) == ids["tokens"]

    # Then a central started there serves the same versions, its chain verifies, a known
    # delivery is a duplicate and a new one gets the next number
    central.stop()
    target.start()
    try:
        assert listing(target) == before
        assert target.cli("audit", "verify").returncode == 0
        status, again = deliver(
            target, envelope("churn", b"two"), delivery_id=ids[("churn", b"two")]
        )
        assert status == 200 and again["duplicate"] is True, again
        status, new = deliver(target, envelope("churn", b"four"))
        assert status == 201 and new["version"] == 4, new
        assert target.request("GET", "/api/v1/models", token=ids["token"])[0] == 200
        code, lines, err = cli(target, "fsck")
        assert code == 0, lines
        # the restored home holds data now: restoring again is refused, unless --force
        target.stop()
        code, lines, err = cli(target, "restore", str(dest))
        assert code == 2
        assert_refused(lines, err, "already holds data", "--force")
        code, lines, err = cli(target, "restore", str(dest), "--force")
        assert code == 0, (lines, err)
        assert_one_line(lines, err, "OK (4 versions")
    finally:
        target.stop()


def test_an_older_handoffs_backup_verifies_and_restores_upgraded(tmp_path, central):
    """IT restores a backup taken before upgrading Handoff: the backup (its schema a migration
    behind) is read through an upgraded copy, never changed, and the home it fills is at
    this Handoff's schema with every row."""
    import hashlib
    import json

    from handoff_agent.store.migrations import MIGRATIONS

    populate(central)
    before = listing(central)
    dest = tmp_path / "backup"
    assert cli(central, "backup", str(dest))[0] == 0
    # Given the backup as the Handoff before m020 wrote it
    lacking = [n for n, _ in MIGRATIONS[-3:]]
    assert lacking == [  # (a newer head: undo it too)
        "m020_token_expiry",
        "m021_signing_keys",
        "m022_audit_indexes",
    ]
    # (closed, so its WAL is checkpointed into the one file a backup holds)
    with contextlib.closing(sqlite3.connect(dest / DB_FILE)) as c, c:
        c.execute("ALTER TABLE tokens DROP COLUMN expires")
        c.execute("ALTER TABLE tokens DROP COLUMN last_used")
        c.execute("DROP TABLE signing_keys")
        for index in ("subject", "actor", "action", "time"):
            c.execute(f"DROP INDEX idx_audit_{index}")
        for name in lacking:
            c.execute("DELETE FROM schema_migrations WHERE name = ?", (name,))
    assert not (dest / f"{DB_FILE}-wal").exists()
    manifest = json.loads((dest / "manifest.json").read_text())
    for name in lacking:
        manifest["migrations"].remove(name)
    del manifest["tables"]["signing_keys"]
    manifest["database_sha256"] = hashlib.sha256((dest / DB_FILE).read_bytes()).hexdigest()
    (dest / "manifest.json").write_text(json.dumps(manifest))
    written = (dest / DB_FILE).read_bytes()
    # Then it verifies, and restores into a home at this Handoff's schema
    code, lines, err = cli(central, "backup", "--verify", str(dest))
    assert code == 0 and lines[0].startswith(f"backup {dest}: OK"), (lines, err)
    target = central_at(tmp_path / "restored", tmp_path / "rt2")
    code, lines, err = cli(target, "restore", str(dest))
    assert code == 0, (lines, err)
    assert_one_line(lines, err, ": OK (4 versions")
    assert (dest / DB_FILE).read_bytes() == written  # the backup was only read
    # its token kept, as tokens made before expiry existed: never expiring, never seen used
    (token,) = map(json.loads, tokens_listed(target).splitlines())
    assert (token["user"], token["expires"], token["last_used"]) == ("bob", None, None)
    # and one a newer Handoff wrote is refused, naming which is needed
    manifest["migrations"].append("m999_future")
    (dest / "manifest.json").write_text(json.dumps(manifest))
    code, lines, err = cli(central, "backup", "--verify", str(dest))
    assert code == 1 and "newer than this Handoff's" in lines[0], (lines, err)
    central.stop()
    target.start()
    try:
        assert listing(target) == before
        assert target.cli("audit", "verify").returncode == 0
        names = {r["name"] for r in target.sql("SELECT name FROM schema_migrations")}
        assert names == {n for n, _ in MIGRATIONS}
        indexes = target.sql(  # m022's, which the older backup lacked
            "SELECT indexname AS name FROM pg_indexes WHERE tablename = 'audit'"
            if target.database_url
            else "SELECT name FROM sqlite_master WHERE tbl_name = 'audit'"
        )
        assert {f"idx_audit_{i}" for i in ("subject", "actor", "action", "time")} <= {
            r["name"] for r in indexes
        }
    finally:
        target.stop()


def test_a_tampered_backup_fails_verify_and_is_not_restored(tmp_path, central):
    populate(central)
    dest = tmp_path / "backup"
    assert cli(central, "backup", str(dest))[0] == 0
    target = central_at(tmp_path / "target", tmp_path / "rt2")

    # A changed blob
    blobbed = tmp_path / "changed-blob"
    shutil.copytree(dest, blobbed)
    victim = sorted(p for p in (blobbed / "blobs").rglob("*") if p.is_file())[0]
    victim.chmod(0o644)
    victim.write_bytes(victim.read_bytes() + b"!")
    digest = victim.parent.name + victim.name
    code, lines, err = cli(central, "backup", "--verify", str(blobbed))
    assert code == 1
    assert_one_line(lines, err, "FAILED", f"blob {digest} is corrupt")

    # A deleted audit row
    cut = tmp_path / "deleted-audit-row"
    shutil.copytree(dest, cut)
    with sqlite3.connect(cut / DB_FILE) as db:
        db.execute("DELETE FROM audit WHERE seq = 2")
    db.close()
    code, lines, err = cli(central, "backup", "--verify", str(cut))
    assert code == 1
    assert_one_line(
        lines, err, "FAILED", "the audit chain breaks at entry 3"
    )  # seq 3 stands where 2 was
    assert "table audit has" in lines[0]

    # Neither is restored: one line, and the target stays empty
    for bad in (blobbed, cut):
        code, lines, err = cli(target, "restore", str(bad))
        assert code == 2
        assert_refused(lines, err, "fails verification")
    target.start()
    try:
        assert target.request("GET", "/api/v1/models")[1]["models"] == []
    finally:
        target.stop()


def test_user_mistakes_are_one_line(tmp_path, central):
    populate(central)
    dest = tmp_path / "exists"
    dest.mkdir()
    code, lines, err = cli(central, "backup", str(dest))
    assert code == 2
    assert_refused(lines, err, "already exists", "never overwrites")
    assert list(dest.iterdir()) == []
    assert not list(tmp_path.glob(".exists.partial-*"))

    code, lines, err = cli(central, "backup", "--verify", str(tmp_path))
    assert code == 1  # a verify's verdict, on stdout
    assert_one_line(lines, err, "FAILED", "not a Handoff backup")

    code, lines, err = cli(central, "restore", str(tmp_path / "nowhere"))
    assert code == 2
    assert_refused(lines, err, "not a directory")

    assert cli(central, "backup", str(tmp_path / "good"))[0] == 0
    secret = "pw-unreachable-5d1f"
    unreachable = f"postgresql://someone:{secret}@127.0.0.1:1/handoff"
    target = central_at(tmp_path / "t", tmp_path / "rt2", database_url=None)
    code, lines, err = cli(target, "restore", str(tmp_path / "good"), "--database-url", unreachable)
    assert code == 2
    assert_refused(lines, err, "Cannot open the database postgresql://someone:***@127.0.0.1:1")
    assert secret not in "".join(lines) + err
    # libpq also takes the password as a query parameter
    unreachable = f"postgresql://someone@127.0.0.1:1/handoff?sslmode=disable&password={secret}"
    code, lines, err = cli(target, "restore", str(tmp_path / "good"), "--database-url", unreachable)
    assert code == 2 and "/handoff?password=***&sslmode=disable: " in err, err
    assert secret not in "".join(lines) + err


def test_a_backup_killed_midway_is_named_by_the_next_one(tmp_path, central):
    """kill -9 leaves the work directory (a copy of the registry, token hashes too): the next
    backup to that name says where it is, so it is removed, not left forgotten."""
    populate(central)
    left = tmp_path / ".nightly.partial-abc123"
    left.mkdir()
    code, _lines, err = cli(central, "backup", str(tmp_path / "nightly"))
    assert code == 0, err
    assert f"{left} is left from a backup to {tmp_path / 'nightly'} that did not finish" in err
    assert "remove it" in err


def test_a_damaged_backup_a_mistyped_database_and_a_live_home_are_one_line(tmp_path, central):
    populate(central)
    good = tmp_path / "good"
    assert cli(central, "backup", str(good))[0] == 0
    # A backup whose database was truncated: a failed verify, and no restore (no home made)
    cut = tmp_path / "truncated"
    shutil.copytree(good, cut)
    db = cut / DB_FILE
    db.chmod(0o644)
    db.write_bytes(db.read_bytes()[:3000])
    code, lines, err = cli(central, "backup", "--verify", str(cut))
    assert code == 1
    assert_one_line(lines, err, "FAILED", f"{DB_FILE} changed", "cannot be read")
    target = central_at(tmp_path / "target", tmp_path / "rt2")
    code, lines, err = cli(target, "restore", str(cut))
    assert code == 2
    assert_refused(lines, err, "cannot be read")
    assert not (tmp_path / "target").exists()

    # A mistyped SQLite path makes no empty database to report on
    typo = tmp_path / "typo.db"
    out = central.cli("backup", str(tmp_path / "b2"), "--database-url", f"sqlite:///{typo}")
    assert out.returncode == 2 and out.stdout == "", out.stdout
    assert out.stderr.strip() == (
        f"No database at {typo} (--database-url). Check the path: only `serve` makes a new one."
    ), out.stderr
    assert not typo.exists() and not (tmp_path / "b2").exists()

    # The running central's own home (and database) is not restored under it, --force or not
    stop_first = (
        f"The central agent at {central.url} (pid {central.proc.pid}) runs on {central.home}: "
        "stop it first (`jupyter handoff stop --role central`), then restore; nothing was "
        "changed."
    )
    code, lines, err = cli(central, "restore", str(good), "--force")
    assert code == 2
    assert_refused(lines, err, stop_first)
    assert central.request("GET", "/api/v1/models")[0] == 200
    if central.database_url is not None:  # its database, restored from another home
        elsewhere = tmp_path / "elsewhere"
        out = handoff_cli(central.env, "restore", str(good), "--force", "--home", str(elsewhere))
        assert out.returncode == 2, out.stdout + out.stderr
        assert (
            out.stderr.strip()
            .splitlines()[-1]
            .startswith(
                f"The central agent at {central.url} (pid {central.proc.pid}) runs on postgresql"
            )
        ), out.stderr
        assert PASSWORD not in out.stderr
    assert listing(central)["churn"], "the running central's versions stay"
