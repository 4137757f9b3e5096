"""``fsck --sweep``: orphan blobs (written, never recorded) go once past the grace period;
referenced blobs, hand-off artefacts and young orphans stay. On both backends: SQLite with
files, and PostgreSQL with S3 (seaweedfs), where a blob's age cannot be back-dated, so the
old orphan is the one a grace of 0 sweeps and a grace of an hour keeps."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time

import pytest
from agent_support import NO_CHECKS, part_files, raw_connect, read_response, upload_head
from s3_support import agent_blobs
from support import RunningAgent, bundle_bytes, handoff_cli, make_tar, until

from handoff_agent.store.metadata import MetadataStore

DAY = 86400


def stores(tmp_path):
    """An agent's stores (not started: the command works on them as they are): the command
    runner, its blob store and its registry, on the test's backend."""
    agent = RunningAgent(tmp_path / "home", tmp_path / "rt", [])
    agent.home.mkdir()
    registry = (
        MetadataStore.open(agent.database_url)
        if agent.database_url
        else MetadataStore.for_home(agent.home)
    )
    return agent, agent_blobs(agent), registry


def on_s3(store) -> bool:
    return store.url.startswith("s3://")


def age(agent, store, digest: str, days: float = 2) -> None:
    """Back-date a blob on the files store, as time would (S3 sets LastModified itself)."""
    if not on_s3(store):
        t = time.time() - days * DAY
        os.utime(agent.home / "blobs" / digest[:2] / digest[2:], (t, t))


def manifest(name: str) -> dict:
    return {"format_version": 1, "name": name, "serialization": "pickle", "flavor": "test"}


def push(registry, store, name: str, data: bytes) -> str:
    """A version as an upload records it: the blob, then its row."""
    digest = store.put(io.BytesIO(data))
    registry.insert_version(name, digest, len(data), manifest(name), "ana", [])
    return digest


def interrupted_upload(store, data: bytes) -> str:
    """An upload killed after its blob was committed, before its row: an orphan."""
    with store.writer() as w:
        w.write(data)
        return w.commit()


def envelope(store, converted: str) -> str:
    """A delivery body the forwarder keeps until delivered, naming its converted bundle."""
    doc = {"local": {"model": "churn", "number": 1}, "bundle_digest": converted}
    return store.put_bytes(make_tar([("envelope.json", json.dumps(doc).encode(), tarfile.REGTYPE)]))


def sweep(agent, *args):
    p = agent.cli("fsck", "--sweep", *args)
    return p.returncode, p.stdout.strip().splitlines(), p.stderr


def test_sweep_removes_old_orphans_and_nothing_else(tmp_path, backend):
    agent, store, registry = stores(tmp_path)
    try:
        # Given two versions (one old), a kept delivery with its converted bundle, an old
        # orphan (an upload killed before its row) and a young one (an upload in flight)
        kept = [push(registry, store, "churn", b"v1" * 5000), push(registry, store, "churn", b"v2")]
        converted = interrupted_upload(store, b"skops bundle for central")
        artefacts = [converted, envelope(store, converted)]
        old = interrupted_upload(store, b"interrupted upload" * 30000)
        for digest in (kept[0], *artefacts, old):
            age(agent, store, digest)
        young = interrupted_upload(store, b"upload still being recorded")
        sizes = {d: store.stat(d).size for d in (old, young)}
        s3 = on_s3(store)
        grace = ["--older-than", "0"] if s3 else []  # on S3 everything is this test's age

        # When a dry run says what would go: the old orphan, and removes nothing
        code, lines, err = sweep(agent, "--dry-run", *grace)
        assert code == 0, (lines, err)
        assert f"would sweep {old} (527 KiB)" in lines
        assert lines[-1].startswith("would sweep")
        assert "nothing removed (--dry-run)" in lines[-1]
        assert store.stat(old) is not None
        if s3:  # a grace of an hour keeps both orphans, which are seconds old
            code, lines, err = sweep(agent, "--older-than", "1h")
            assert code == 0, (lines, err)
            assert lines[-1] == "swept 0 orphan blobs, 0 KiB (2 younger than 1h kept)"
            assert store.stat(old) is not None and store.stat(young) is not None

        # Then the sweep removes it, in one line, and keeps the young one
        code, lines, err = sweep(agent, *grace)
        assert code == 0, (lines, err)
        assert "fsck: OK" in lines
        swept = [old, young] if s3 else [old]
        if s3:
            assert lines[-1] == "swept 2 orphan blobs, 527 KiB"
        else:
            assert lines[-1] == "swept 1 orphan blob, 527 KiB (1 younger than 24h kept)"
        assert [store.stat(d) for d in swept] == [None] * len(swept)
        for digest in (*kept, *artefacts, *({young} - set(swept))):
            store.verify(digest)  # there, whole

        # and fsck afterwards is clean: only the young orphan is noted, if it is still there
        p = agent.cli("fsck")
        assert p.returncode == 0 and "fsck: OK" in p.stdout, p.stdout
        assert old not in p.stdout
        in_flight = f"note: in flight: blob {young} (written within 24h; its row may be on its way)"
        assert (in_flight in p.stdout.splitlines()) is not s3, p.stdout
        assert "interrupted" not in p.stdout and "--sweep` removes" not in p.stdout, p.stdout
        assert "delivery envelope" in p.stdout and "converted bundle" in p.stdout

        # and one audit row says what went, on a chain that still verifies
        (row,) = registry.audit_rows(("blobs.sweep",))
        payload = json.loads(row["payload"])
        assert payload["count"] == len(swept) and sorted(payload["digests"]) == sorted(swept)
        assert payload["bytes"] == sum(sizes[d] for d in swept)
        assert row["subject"] == store.url
        assert registry.verify_audit() is None
    finally:
        registry.close()


def test_each_delete_checks_again_right_before(tmp_path, backend):
    _, store, registry = stores(tmp_path)
    try:
        push(registry, store, "churn", b"v1")
        gone = interrupted_upload(store, b"an orphan nobody records")
        later = interrupted_upload(store, b"an orphan a row names while it is swept")
        everything_old = time.time() + 60  # every blob counts as older than this cutoff

        def referenced(digest):
            return bool(registry.digests(only=digest))

        # a blob still unreferenced at the last moment goes
        assert store.sweep(gone, everything_old, referenced) == len(b"an orphan nobody records")
        assert store.stat(gone) is None

        # a row recorded between the listing and the delete keeps it
        def recorded_meanwhile(digest):
            registry.insert_version("late", digest, 1, manifest("late"), "ana", [])
            return referenced(digest)

        assert store.sweep(later, everything_old, recorded_meanwhile) is None
        store.verify(later)

        # a blob inside the grace period stays, whatever the registry says
        young = interrupted_upload(store, b"young")
        assert store.sweep(young, time.time() - 3600, referenced) is None
        store.verify(young)
    finally:
        registry.close()


def test_a_blob_a_dead_sweep_set_aside_is_put_back(tmp_path, backend):
    """A sweep killed between setting a blob aside and judging it (files only: S3 sets
    nothing aside) leaves the blob under another name; fsck puts it back before it lists."""
    agent, store, registry = stores(tmp_path)
    try:
        if on_s3(store):
            pytest.skip("a sweep on S3 sets nothing aside")
        digest = push(registry, store, "churn", b"a version's bundle")
        path = agent.home / "blobs" / digest[:2] / digest[2:]
        aside = path.with_name(f"{path.name}.0123456789abcdef.sweep")
        os.rename(path, aside)  # as the kill left it

        p = agent.cli("fsck")
        assert p.returncode == 0, p.stdout + p.stderr
        assert "note: put back 1 blob(s) a sweep that died had set aside" in p.stdout
        assert "fsck: OK" in p.stdout
        store.verify(digest)
        assert not list(path.parent.glob("*.sweep"))
    finally:
        registry.close()


def test_bytes_published_again_are_young_again(tmp_path, backend):
    """An old orphan's bytes uploaded again (a retried push, the same report) are about to
    be referenced: the publish makes them young, so a sweep meanwhile keeps them."""
    agent, store, registry = stores(tmp_path)
    registry.close()
    data = b"pushed, killed, pushed again"
    for publish in (store.put_bytes, lambda d: interrupted_upload(store, d)):
        digest = interrupted_upload(store, data)
        if on_s3(store):  # LastModified is the server's, in whole seconds: let one pass
            before = store.stat(digest).modified
            time.sleep(1.1)
        else:
            age(agent, store, digest)
            before = store.stat(digest).modified
            assert before < time.time() - DAY
        assert publish(data) == digest
        cutoff = before + 0.5  # what a sweep started between the two publishes would judge by
        assert store.stat(digest).modified > cutoff
        assert store.sweep(digest, cutoff, lambda d: False) is None
        store.verify(digest)
        store.delete(digest)


def test_plain_fsck_says_an_upload_in_flight_is_no_problem(tmp_path, backend):
    """fsck beside an agent receiving an upload: the upload's spool file, written moments
    ago, is in flight (exit 0, no "interrupted"); one a crash left days ago is interrupted.
    The grace is the sweep's (``SWEEP_GRACE``)."""
    agent = RunningAgent(tmp_path / "home", tmp_path / "rt", [NO_CHECKS])
    agent.start()
    try:
        data = bundle_bytes("churn", model=b"x" * (1 << 20))
        with raw_connect(agent) as sock:
            # Given an upload held open halfway, and a spool file a crash left two days ago
            sock.sendall(upload_head(agent, "churn", len(data)) + data[: len(data) // 2])
            (live,) = until(lambda: part_files(agent.home), 60, "the upload's spool file")
            stale = agent.home / "tmp" / "upload-crashed.part"
            stale.write_bytes(b"half a bundle")
            t = time.time() - 2 * DAY
            os.utime(stale, (t, t))
            # When fsck runs
            p = agent.cli("fsck")
            # Then the live upload is in flight, the stale one interrupted, and all is OK
            assert p.returncode == 0, p.stdout + p.stderr
            lines = p.stdout.splitlines()
            young = f"note: in flight: upload {live.name} (written within 24h; still being"
            assert f"{young} received)" in lines, lines
            assert (
                "note: partial upload upload-crashed.part (interrupted, never acknowledged; the "
                "agent removes it at its next start)"
            ) in lines, lines
            assert lines[-1] == "fsck: OK", lines
            # and the upload, finished, is acknowledged as ever
            sock.sendall(data[len(data) // 2 :])
            assert read_response(sock)[0] == 201
    finally:
        agent.stop()


def test_sweep_refuses_a_registry_that_is_not_the_stores(tmp_path, backend):
    agent, store, registry = stores(tmp_path)
    registry.close()
    if on_s3(store):
        pytest.skip("the pairing check is the backend's registry query, run on files here")
    orphan = interrupted_upload(store, b"would look unreferenced")
    age(agent, store, orphan)
    # Given a mistyped --home: another home's (empty) registry over this home's blobs
    other = tmp_path / "other"
    other.mkdir()
    MetadataStore.for_home(other).close()
    blobs = f"file://{agent.home / 'blobs'}"
    p = handoff_cli(agent.env, "fsck", "--sweep", "--home", str(other), "--blob-url", blobs)
    assert p.returncode == 1, p.stdout + p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("fsck --sweep refused: the registry refers to none of the 1")
    assert line.endswith("Nothing was swept.")
    store.verify(orphan)

    # Given a registry naming a blob this store lacks (another store's, or one lost)
    registry = MetadataStore.for_home(agent.home)
    registry.insert_version("churn", "ab" * 32, 1, manifest("churn"), "ana", [])
    registry.close()
    p = agent.cli("fsck", "--sweep")
    assert p.returncode == 1 and "MISSING blob" in p.stdout, p.stdout + p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("fsck --sweep refused: the registry names 1 blob(s) this store lacks")
    store.verify(orphan)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--sweep", "--older-than", "soon"], "--older-than 'soon' is not a period"),
        (["--sweep", "--older-than=-1h"], "--older-than '-1h' is not a period"),
        (["--sweep", "--older-than", "24"], "--older-than '24' is not a period with its unit"),
        (["--dry-run"], "--dry-run and --older-than go with --sweep"),
        (["--older-than", "1h"], "--dry-run and --older-than go with --sweep"),
    ],
)
def test_usage_mistakes_are_one_line(tmp_path, backend, args, said):
    if backend.name != "sqlite":
        pytest.skip("refused before any store is opened")
    p = handoff_cli(dict(os.environ), "fsck", *args, "--home", str(tmp_path))
    assert p.returncode == 2 and p.stdout == ""
    line, usage = p.stderr.strip().splitlines()  # as every command's usage mistake
    assert line.startswith(said) and usage.startswith("Usage: jupyter handoff fsck"), line
