"""The copy core on its own, on each metadata backend: one snapshot, resumable, ids continue."""

from __future__ import annotations

import json

import pytest

from handoff_agent.store import backup, transfer
from handoff_agent.store.blobs import BlobUnavailable, open_blob_store
from handoff_agent.store.engine import sqlite_url
from handoff_agent.store.metadata import MetadataStore


@pytest.fixture
def stores(tmp_path, backend):
    """``make(name)``: a metadata store on the test's backend and a blob store, both empty."""
    opened = []

    def make(name: str):
        home = tmp_path / name
        home.mkdir()
        url = backend.database_url() or sqlite_url(home / "registry.db")
        meta = MetadataStore.open(url)
        opened.append(meta)
        return meta, open_blob_store("", home)

    yield make
    for meta in opened:
        meta.close()


def fill(meta, blobs, n: int = 3) -> None:
    for i in range(n):
        blobs.put_bytes(f"blob {i}".encode())
        meta.audit_append("ann", "test.write", f"thing {i}", {"i": i})
        meta.event_append("test", {"i": i})


def test_a_backup_is_one_snapshot_whatever_is_written_meanwhile(tmp_path, stores):
    src_meta, src_blobs = stores("src")
    fill(src_meta, src_blobs)

    def write_meanwhile(msg):  # called once the rows are read, before the blobs are copied
        if msg.startswith("metadata:"):
            fill(src_meta, src_blobs, 1)
            src_blobs.put_bytes(b"a blob written during the backup")

    manifest = backup.backup(src_meta, src_blobs, tmp_path / "bk", progress=write_meanwhile)
    assert manifest.audit["seq"] == 3 and manifest.tables["audit"] == 3
    assert manifest.tables["events"] == 3
    assert len(manifest.blobs) == 4  # blobs are immutable: one more is harmless
    assert src_meta.audit_head()["seq"] == 4
    assert backup.verify_backup(tmp_path / "bk")[1] == []


class FailingAfter:
    """A blob store that goes away after ``n`` writes (a network drop mid-copy)."""

    def __init__(self, store, n: int):
        self.store, self.left = store, n

    def __getattr__(self, name):
        return getattr(self.store, name)

    def put(self, source, expected=None):
        if self.left == 0:
            raise BlobUnavailable("S3 is unavailable (test)")
        self.left -= 1
        return self.store.put(source, expected)


def test_a_copy_cut_short_commits_nothing_and_resumes(stores):
    src_meta, src_blobs = stores("src")
    fill(src_meta, src_blobs)
    dst_meta, dst_blobs = stores("dst")

    with pytest.raises(transfer.TransferError, match=r"Copying blob .* failed"):
        transfer.migrate(src_meta, src_blobs, dst_meta, FailingAfter(dst_blobs, 1))
    assert dst_meta.audit_head()["seq"] == 0 and dst_meta.count_rows()["events"] == 0
    assert len(list(dst_blobs.iter_digests())) == 1

    said = []
    manifest, problems = transfer.migrate(
        src_meta, src_blobs, dst_meta, dst_blobs, progress=said.append
    )
    assert problems == []
    assert "blobs: 2 copied, 1 already there" in said
    assert dst_meta.audit_head() == src_meta.audit_head() == manifest.audit


def test_ids_continue_past_the_copied_ones(stores):
    src_meta, src_blobs = stores("src")
    fill(src_meta, src_blobs)
    dst_meta, dst_blobs = stores("dst")
    transfer.migrate(src_meta, src_blobs, dst_meta, dst_blobs)
    assert dst_meta.event_append("new", {"x": 1}) == 4  # the sequence continues (PostgreSQL)
    assert dst_meta.audit_append("bob", "test.after", "x", {})["seq"] == 4
    assert dst_meta.audit_first_bad() is None


def test_a_target_holding_data_is_refused_unless_forced(stores):
    src_meta, src_blobs = stores("src")
    fill(src_meta, src_blobs)
    dst_meta, dst_blobs = stores("dst")
    dst_meta.audit_append("old", "test.old", "x", {})
    with pytest.raises(transfer.TransferError, match=r"already holds data.*--force"):
        transfer.migrate(src_meta, src_blobs, dst_meta, dst_blobs)
    assert dst_meta.audit_head()["seq"] == 1  # untouched
    _, problems = transfer.migrate(src_meta, src_blobs, dst_meta, dst_blobs, force=True)
    assert problems == [] and dst_meta.audit_head() == src_meta.audit_head()


def test_a_crafted_manifest_is_refused_before_any_path_is_made(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    doc = {
        "format": transfer.FORMAT,
        "backup_format": transfer.FORMAT_VERSION,
        "migrations": [],
        "tables": {},
        "audit": {"seq": 0, "hash": "0" * 64},
        "blobs": ["../../../etc/passwd"],
    }
    (fake / backup.MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(transfer.TransferError, match="is not a sha256 digest"):
        backup.read_manifest(fake)
