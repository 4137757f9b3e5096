"""migrate: a SQLite + files central moved to PostgreSQL + S3 (real ones), then served from there.

Not parametrized over backends: the source is always the embedded default, the target always
PostgreSQL and a seaweedfs bucket.
"""

from __future__ import annotations

from backends import pg_url
from s3_support import blob_args
from test_backup import (
    assert_one_line,
    assert_refused,
    central_at,
    listing,
    populate,
    tokens_listed,
)
from test_pipeline_delivery import deliver, envelope


def test_migrate_sqlite_central_to_postgresql_and_s3(tmp_path, postgres, s3_server):
    # Given a central on SQLite and files, with delivered versions, a token, a trusted type
    source = central_at(tmp_path / "central", tmp_path / "rt", database_url=None)
    source.start()
    try:
        ids = populate(source)
        before = listing(source)
        models = source.request("GET", "/api/v1/models")[1]
    finally:
        source.stop()

    url = postgres.database()
    bucket = s3_server.new_bucket()
    endpoint = f"--HandoffAgent.s3_endpoint_url={s3_server.endpoint}"
    password = url.split(":")[2].split("@")[0]
    # The password reaches libpq through PGPASSWORD, off the command line
    source.extra_env.update(s3_server.env, PGPASSWORD=password)
    to = url.replace(f":{password}@", "@")

    # When it migrates
    out = source.cli("migrate", "--to", to, "--blobs", f"s3://{bucket}/blobs", endpoint)
    lines, err = out.stdout.strip().splitlines(), out.stderr
    assert out.returncode == 0, (lines, err)
    assert_one_line(lines, err, "migrate to postgresql://", ": OK (4 versions")
    assert f"--blob-url s3://{bucket}/blobs" in lines[0]
    assert password not in out.stdout + out.stderr

    # Then running it again is refused clearly (the target holds data), nothing changes
    again = source.cli("migrate", "--to", to, "--blobs", f"s3://{bucket}/blobs", endpoint)
    assert again.returncode == 2
    assert_refused(again.stdout.strip().splitlines(), again.stderr, "already holds data")

    # And a central started on the new stores serves the same versions, verifies its chain,
    # knows the old deliveries, takes a new one as the next number, and its tokens still work
    target = central_at(
        tmp_path / "central",
        tmp_path / "rt",
        database_url=pg_url(url.rsplit("/", 1)[1]),
        args=["--blob-url", f"s3://{bucket}/blobs", endpoint],
    )
    target.extra_env.update(s3_server.env)
    assert tokens_listed(target) == ids["tokens"]  # expiry and last use carried
    target.start()
    try:
        assert listing(target) == before
        assert target.request("GET", "/api/v1/models", token=ids["token"])[1] == models
        assert target.cli("audit", "verify").returncode == 0
        status, dup = deliver(target, envelope("churn", b"one"), delivery_id=ids[("churn", b"one")])
        assert status == 200 and dup["duplicate"] is True, dup
        status, new = deliver(target, envelope("churn", b"four"))
        assert status == 201 and new["version"] == 4, new
        status, new = deliver(target, envelope("fresh", b"z"))
        assert status == 201 and new["version"] == 1, new
        fsck = target.cli("fsck", *blob_args(target))
        assert fsck.returncode == 0, fsck.stdout
        token = target.make_token("carol", "admin")  # a new token row: ids continue
        assert target.request("GET", "/api/v1/models", token=token)[0] == 200
    finally:
        target.stop()


def test_migrate_refuses_an_unreachable_target_in_one_line(tmp_path):
    source = central_at(tmp_path / "central", tmp_path / "rt", database_url=None)
    source.start()
    source.stop()
    secret = "pw-never-printed-81c2"
    out = source.cli("migrate", "--to", f"postgresql://u:{secret}@127.0.0.1:1/db")
    assert out.returncode == 2
    assert_refused(out.stdout.strip().splitlines(), out.stderr, "Cannot open the database")
    assert secret not in out.stdout + out.stderr


def test_help_of_the_store_commands(tmp_path):
    import subprocess
    import sys

    for sub in ("backup", "restore", "migrate"):
        p = subprocess.run(
            [sys.executable, "-m", "handoff_agent", sub, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0 and "Traceback" not in p.stderr, (sub, p.stderr)
        assert "--home" in p.stdout and "--database-url" in p.stdout, sub
