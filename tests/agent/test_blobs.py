"""The BlobStore interface, one suite for both backends: the filesystem and a real S3 server
(seaweedfs). Content addressing, verification on every read, refused mismatches and digests,
temporary copies that leave nothing behind, and multipart uploads for large blobs."""

from __future__ import annotations

import hashlib
import io
import os
import stat

import pytest

from handoff_agent.store.blobs import (
    BlobCorrupt,
    BlobMissing,
    BlobStore,
    DigestMismatch,
    open_blob_store,
)

MIB = 1 << 20


@pytest.fixture(params=["fs", "s3"])
def blob_backend(request, tmp_path, monkeypatch):
    """(store, tamper) where tamper(digest, new_bytes) changes a stored blob behind the
    store's back, as disk rot or a careless operator would."""
    home = tmp_path / "home"
    if request.param == "fs":
        store = open_blob_store("", home)

        def tamper(digest: str, data: bytes) -> None:
            path = home / "blobs" / digest[:2] / digest[2:]
            os.chmod(path, 0o644)  # blobs are written read-only
            path.write_bytes(data)

        return store, tamper
    server = request.getfixturevalue("s3_server")
    bucket = server.new_bucket()
    for k, v in server.env.items():  # the standard chain; the store takes them out again
        monkeypatch.setenv(k, v)
    store = open_blob_store(
        f"s3://{bucket}/pre/fix", home, endpoint_url=server.endpoint, multipart_threshold=5 * MIB
    )
    assert "AWS_SECRET_ACCESS_KEY" not in os.environ

    def tamper(digest: str, data: bytes) -> None:
        key = f"pre/fix/{digest[:2]}/{digest[2:]}"
        server.client().put_object(Bucket=bucket, Key=key, Body=data)

    return store, tamper


@pytest.fixture
def store(blob_backend) -> BlobStore:
    return blob_backend[0]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_put_then_read_every_way(store):
    data = b"model bytes " * 1000
    digest = store.put_bytes(data)
    assert isinstance(store, BlobStore)
    assert digest == sha(data)
    assert store.exists(digest) and store.size(digest) == len(data)
    assert store.read_bytes(digest) == data
    store.verify(digest)
    with store.open(digest) as f:
        assert f.read() == data
    with store.local_copy(digest) as f:
        assert f.read() == data
        f.seek(0)
        assert f.read(5) == data[:5]  # seekable: tarfile and workers need that


def test_put_streams_from_an_iterator_or_a_file(store):
    parts = [os.urandom(100_000) for _ in range(7)]
    data = b"".join(parts)
    assert store.put(iter(parts)) == sha(data)
    assert store.put(io.BytesIO(data), expected=sha(data)) == sha(data)
    assert store.read_bytes(sha(data)) == data


def test_a_digest_mismatch_is_refused_and_leaves_nothing(store):
    before = list(store.iter_digests())
    with pytest.raises(DigestMismatch):
        store.put([b"what arrived"], expected=sha(b"what was promised"))
    assert not store.exists(sha(b"what arrived"))
    assert not store.exists(sha(b"what was promised"))
    assert list(store.iter_digests()) == before
    assert store.partial_uploads() == []


def test_the_same_bytes_are_stored_once(store):
    d1, d2 = store.put_bytes(b"same"), store.put_bytes(b"same")
    assert d1 == d2 and list(store.iter_digests()) == [d1]


def test_iter_digests_lists_every_blob_sorted(store):
    ds = {store.put_bytes(bytes([i]) * 10) for i in range(5)}
    assert list(store.iter_digests()) == sorted(ds)


@pytest.mark.parametrize("how", ["flipped", "truncated", "replaced"])
def test_corruption_is_detected_on_every_read(blob_backend, how):
    store, tamper = blob_backend
    data = b"precious bytes " * 100
    digest = store.put_bytes(data)
    damaged = {
        "flipped": data[:10] + bytes([data[10] ^ 1]) + data[11:],
        "truncated": data[:-1],
        "replaced": b"something else entirely",
    }[how]
    tamper(digest, damaged)
    with pytest.raises(BlobCorrupt, match=digest):
        store.read_bytes(digest)
    with pytest.raises(BlobCorrupt, match=digest):
        store.verify(digest)
    with pytest.raises(BlobCorrupt, match=digest):
        store.local_copy(digest)
    with pytest.raises(BlobCorrupt), store.open(digest) as f:
        while f.read(7):
            pass


def test_the_same_bytes_stored_again_replace_a_corrupt_blob(blob_backend):
    """What the corrupt blob's hint tells a user: push the model again. Its bytes must then
    replace the bad ones, not be skipped as already stored."""
    store, tamper = blob_backend
    data = b"precious bytes " * 100
    digest = store.put_bytes(data)
    tamper(digest, data[:-1])
    assert store.put(io.BytesIO(data)) == digest
    store.verify(digest)
    assert store.read_bytes(digest) == data


def test_a_missing_blob_says_so(store):
    absent = sha(b"never stored")
    assert not store.exists(absent)
    for read in (store.read_bytes, store.verify, store.local_copy, store.size, store.open):
        with pytest.raises(BlobMissing):
            read(absent)


def test_a_local_copy_is_read_only_or_gone_after_use(blob_backend, tmp_path):
    store, _ = blob_backend
    data = os.urandom(300_000)
    digest = store.put_bytes(data)
    tmp = tmp_path / "home" / "tmp"
    with store.local_copy(digest) as f:
        assert f.read() == data
        if store.url.startswith("s3://"):
            # A temporary copy without a name: nothing to remove, even after a crash.
            assert list(tmp.iterdir()) == []
        else:
            # The blob itself, opened read-only: it cannot be changed through the copy.
            assert stat.S_IMODE(os.fstat(f.fileno()).st_mode) == 0o444
            with pytest.raises(io.UnsupportedOperation):
                f.write(b"x")
    assert f.closed
    assert list(tmp.iterdir()) == []


BAD_DIGESTS = [
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
]


@pytest.mark.parametrize("bad", BAD_DIGESTS)
def test_anything_but_a_digest_is_refused(store, bad):
    for call in (
        store.exists,
        store.size,
        store.open,
        store.read_bytes,
        store.verify,
        store.local_copy,
        store.delete,
    ):
        with pytest.raises(ValueError, match="not a sha256 digest"):
            call(bad)


def test_an_aborted_writer_leaves_nothing(store):
    w = store.writer()
    w.write(b"half an upload")
    assert store.partial_uploads() != []
    w.abort()
    assert store.partial_uploads() == [] and list(store.iter_digests()) == []


def test_a_large_upload_written_around_the_page_cache_is_stored_whole(store):
    """Past ``DIRECT_FROM`` a writer's bytes go to disk directly (O_DIRECT); chunks of odd
    sizes still make the blob they hash to."""
    w = store.writer()
    w.DIRECT_FROM = 3 * MIB + 5
    parts = [os.urandom(n) for n in (MIB + 3, 2 * MIB - 1, 3 * MIB + 7, 11)]
    for part in parts:
        w.hash(part)
        w.append(part)
    data = b"".join(parts)
    assert w.commit() == sha(data)
    assert store.read_bytes(sha(data)) == data


def test_clean_temp_removes_what_a_crash_left(store, tmp_path):
    for _ in range(3):
        store.writer().write(b"interrupted")  # a crash: never committed nor aborted
    keep = tmp_path / "home" / "tmp" / "something-else"
    keep.write_text("not an upload")
    assert store.clean_temp() == 3
    assert store.partial_uploads() == []
    assert keep.exists()


def test_a_writer_a_worker_filled_is_hashed_again(store):
    w = store.writer()
    os.write(w.fileno(), b"written by a worker through the descriptor")
    w.rehash()
    digest = w.commit()
    assert digest == sha(b"written by a worker through the descriptor")
    assert store.read_bytes(digest) == b"written by a worker through the descriptor"


def test_delete(store):
    digest = store.put_bytes(b"to be removed")
    store.delete(digest)
    assert not store.exists(digest) and list(store.iter_digests()) == []


def test_a_writer_validates_before_it_commits(store):
    w = store.writer()
    w.write(b"a bundle to check")
    with w.reader() as f:
        assert f.read() == b"a bundle to check"
    assert not store.exists(sha(b"a bundle to check"))  # nothing visible before commit
    assert w.commit() == sha(b"a bundle to check")
    assert store.exists(sha(b"a bundle to check"))


# -- backend specifics --------------------------------------------------------------------


def test_fs_blobs_are_read_only_files_named_by_their_digest(tmp_path):
    store = open_blob_store("", tmp_path / "home")
    digest = store.put_bytes(b"x")
    path = tmp_path / "home" / "blobs" / digest[:2] / digest[2:]
    assert path.read_bytes() == b"x"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


def test_s3_keys_mirror_the_disk_layout_and_large_blobs_go_multipart(
    s3_server, tmp_path, monkeypatch
):
    bucket = s3_server.new_bucket()
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    store = open_blob_store(
        f"s3://{bucket}/team-a/blobs",
        tmp_path / "home",
        endpoint_url=s3_server.endpoint,
        multipart_threshold=5 * MIB,
    )
    small = store.put_bytes(b"small")
    big_data = os.urandom(11 * MIB)
    big = store.put(io.BytesIO(big_data))
    client = s3_server.client()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"team-a/blobs/{d[:2]}/{d[2:]}" for d in (small, big)}
    # An S3 ETag ends in -N for an object uploaded in N parts.
    etag = client.head_object(Bucket=bucket, Key=f"team-a/blobs/{big[:2]}/{big[2:]}")["ETag"]
    assert etag.strip('"').endswith("-3"), etag
    small_etag = client.head_object(Bucket=bucket, Key=f"team-a/blobs/{small[:2]}/{small[2:]}")
    assert "-" not in small_etag["ETag"]
    assert store.read_bytes(big) == big_data


def test_s3_configuration_mistakes_are_clear_and_hold_no_secret(s3_server, tmp_path, monkeypatch):
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match="does not exist"):
        open_blob_store("s3://no-such-bucket-here", tmp_path, endpoint_url=s3_server.endpoint)
    bucket = s3_server.new_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong" * 8)
    with pytest.raises(ValueError, match="refused access") as e:
        open_blob_store(f"s3://{bucket}", tmp_path, endpoint_url=s3_server.endpoint)
    assert "wrong" not in str(e.value) and s3_server.secret_key not in str(e.value)


@pytest.mark.parametrize(
    "url",
    ["s3://Bad_Bucket/x", "s3://ok-bucket/../etc", "s3://ok-bucket/a b", "ftp://x", "file://rel"],
)
def test_bad_blob_urls_are_refused(url, tmp_path):
    with pytest.raises(ValueError, match="blob_url"):
        open_blob_store(url, tmp_path)
