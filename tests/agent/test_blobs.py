"""BlobStore on its own: content addressing, atomic commit, corruption detection."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from handoff_agent.blobs import BlobCorrupt, BlobStore


@pytest.fixture
def store(tmp_path):
    return BlobStore(tmp_path / "home" / "blobs")


def flip_a_byte(path, offset=0):
    os.chmod(path, 0o644)  # blobs are written read-only
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_put_names_the_blob_by_its_sha256(store):
    data = b"some model bytes"
    digest = store.put_bytes(data)
    assert digest == hashlib.sha256(data).hexdigest()
    path = store.path(digest)
    assert path == store.root / digest[:2] / digest[2:]
    assert path.read_bytes() == data
    assert store.exists(digest)
    assert store.read_bytes(digest) == data
    assert store.verify(digest) == path
    assert store.hash_file(digest) == digest


def test_blobs_are_read_only(store):
    digest = store.put_bytes(b"x")
    assert stat.S_IMODE(store.path(digest).stat().st_mode) == 0o444


def test_put_is_idempotent(store):
    d1 = store.put_bytes(b"same")
    d2 = store.put_bytes(b"same")
    assert d1 == d2
    assert list(store.digests()) == [d1]
    assert list(store.tmp.iterdir()) == []


def test_digests_lists_every_blob(store):
    ds = {store.put_bytes(bytes([i]) * 10) for i in range(5)}
    assert set(store.digests()) == ds


@pytest.mark.parametrize("offset", [0, -1])
def test_verify_and_read_detect_a_flipped_byte(store, offset):
    digest = store.put_bytes(b"precious bytes " * 100)
    flip_a_byte(store.path(digest), offset)
    with pytest.raises(BlobCorrupt, match=digest):
        store.verify(digest)
    with pytest.raises(BlobCorrupt):
        store.read_bytes(digest)
    assert store.hash_file(digest) != digest


def test_verify_detects_truncation(store):
    digest = store.put_bytes(b"0123456789" * 100)
    path = store.path(digest)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.truncate(500)
    with pytest.raises(BlobCorrupt):
        store.verify(digest)


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "..",
        "",
        "ab/../../etc/passwd",
        "a" * 63,
        "a" * 65,
        "A" * 64,
        "g" * 64,
        "/" + "a" * 63,
        "a" * 64 + "\n",
        "sha256:" + "a" * 64,
    ],
)
def test_path_refuses_anything_but_a_digest(store, bad):
    with pytest.raises(ValueError):
        store.path(bad)


def test_commit_moves_an_fsynced_temp_into_place(store):
    data = b"streamed upload"
    fd, temp = store.new_temp()
    assert temp.parent == store.tmp and temp.name.startswith("upload-")
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    digest = hashlib.sha256(data).hexdigest()
    final = store.commit(temp, digest)
    assert final.read_bytes() == data
    assert not temp.exists()
    # A second commit of the same content just drops its temp file.
    fd, temp2 = store.new_temp()
    os.write(fd, data)
    os.close(fd)
    assert store.commit(temp2, digest) == final
    assert not temp2.exists()


def test_clean_temp_removes_only_partial_uploads(store):
    for _ in range(3):
        fd, _path = store.new_temp()
        os.close(fd)
    keep = store.tmp / "something-else"
    keep.write_text("not an upload")
    assert store.clean_temp() == 3
    assert list(store.tmp.iterdir()) == [keep]
