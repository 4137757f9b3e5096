"""Bad pushes: each gets a 4xx with the error shape, stores nothing, leaves the agent healthy."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import tarfile

import pytest
from agent_support import (
    NO_CHECKS,
    assert_error,
    assert_nothing_stored,
    part_files,
    raw_connect,
    read_response,
    sha256,
    upload_head,
    wait_until,
)
from s3_support import agent_blobs
from support import RunningAgent, bundle_bytes, make_tar, manifest_for

LIMIT = 100_000
REG, SYM, LNK, DIR = tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE
MODEL = b"not really a pickle"


@pytest.fixture(scope="module")
def ingest_agent(tmp_path_factory, backend):
    root = tmp_path_factory.mktemp("ingest")
    a = RunningAgent(
        root / "home", root / "rt", [NO_CHECKS, f"--HandoffAgent.max_bundle_size={LIMIT}"]
    )
    a.start()
    yield a
    a.stop()


@pytest.fixture
def a(ingest_agent):
    yield ingest_agent
    assert_nothing_stored(ingest_agent)


def manifest_bytes(name="m", members=None, **extra) -> bytes:
    return json.dumps(manifest_for(name, members or {"model.pkl": MODEL}, **extra)).encode()


# -- names ----------------------------------------------------------------------------------

BAD_NAMES = [
    "..%2Fetc",
    "..%2F..%2Fetc%2Fpasswd",
    "a%2Fb",
    "..",
    "%2E%2E",
    "a..b",
    "with%20space",
    "trailing%20",
    "-leading-dash",
    ".hidden",
    "_under",
    "x" * 129,
    "caf%C3%A9",
    "semi%3Bcolon",
    "nul%00byte",
    "back%5Cslash",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name_push_is_400(a, name):
    status, body = a.push_bytes(name, bundle_bytes("m"))
    assert_error(status, body, 400, "invalid_name")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name_read_is_400(a, name):
    status, body = a.request("GET", f"/api/v1/models/{name}/versions")
    assert_error(status, body, 400, "invalid_name")
    status, body = a.request("GET", f"/api/v1/models/{name}/versions/1")
    assert_error(status, body, 400, "invalid_name")


@pytest.mark.parametrize("path", ["a/b", "../etc", "a/../../b"])
def test_name_with_a_raw_slash_cannot_route(a, path):
    status, body = a.push_bytes(path, bundle_bytes("m"))
    assert status in (400, 404), body
    assert_error(status, body, status)


def test_longest_valid_name_is_accepted_by_the_name_rule(a):
    # 128 characters pass the name rule; the bundle then fails for another reason (422).
    name = "x" * 128
    status, body = a.push_bytes(name, b"garbage" * 10)
    assert_error(status, body, 422, "invalid_bundle")


# -- size -------------------------------------------------------------------------------------


def test_declared_oversize_is_413_before_the_body(a):
    with raw_connect(a) as sock:
        sock.sendall(upload_head(a, "m", 1 << 20))
        status, body = read_response(sock)
    assert_error(status, body, 413, "too_large")
    assert "max_bundle_size" in body["error"]["hint"]


def test_oversize_body_with_content_length_is_413_or_dropped(a):
    # The agent answers 413 as soon as it sees the header, then closes without reading 1 MB;
    # a client still sending may see the close as a reset instead of the answer.
    try:
        status, body = a.push_bytes("m", os.urandom(1 << 20))
    except (ConnectionError, http.client.HTTPException):
        return
    assert_error(status, body, 413, "too_large")


def test_oversize_chunked_body_is_refused(a):
    # No Content-Length: the agent only learns the size while reading. Past the limit it stops
    # reading and drops the connection (or answers 413 if it manages to).
    data = os.urandom(1 << 20)
    with raw_connect(a) as sock:
        try:
            sock.sendall(upload_head(a, "m", None))
            for i in range(0, len(data), 1 << 16):
                chunk = data[i : i + (1 << 16)]
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
            status, body = read_response(sock)
        except (ConnectionError, http.client.HTTPException):
            return
    assert_error(status, body, 413, "too_large")


def test_chunked_body_within_limit_is_read(ingest_agent):
    # Chunked transfer itself is fine; this one is a garbage bundle so nothing is stored.
    data = b"garbage!" * 1000
    with raw_connect(ingest_agent) as sock:
        sock.sendall(upload_head(ingest_agent, "m", None))
        sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n")
        status, body = read_response(sock)
    assert_error(status, body, 422, "invalid_bundle")
    assert_nothing_stored(ingest_agent)


# -- bundle contents ------------------------------------------------------------------------


def push_tar(agent, tar: bytes, name="m"):
    return agent.push_bytes(name, tar)


@pytest.mark.parametrize(
    "data",
    [b"\x00" * 1024, b"garbage " * 500, os.urandom(5000), b"PK\x03\x04 not a zip either"],
    ids=["zeros", "text", "random", "zip-magic"],
)
def test_garbage_is_422(a, data):
    status, body = a.push_bytes("m", data)
    assert_error(status, body, 422, "invalid_bundle")


def test_compressed_tar_is_422(a):
    status, body = a.push_bytes("m", gzip.compress(bundle_bytes("m")))
    assert_error(status, body, 422, "invalid_bundle")


def test_truncated_tar_is_422(a):
    whole = bundle_bytes("m", model=os.urandom(4000))
    for cut in (len(whole) // 2, 700, 512 + 100):
        status, body = a.push_bytes("m", whole[:cut])
        assert_error(status, body, 422, "invalid_bundle")


@pytest.mark.parametrize("member", ["../evil", "../../evil", "/etc/evil", "data/../../evil"])
def test_traversal_member_is_422(a, member):
    extra = [(member, b"pwned", REG)]
    status, body = push_tar(a, bundle_bytes("m", extra=extra))
    assert_error(status, body, 422, "invalid_bundle")
    assert not (a.home.parent / "evil").exists()
    assert not (a.home / "evil").exists()


@pytest.mark.parametrize("kind", [SYM, LNK], ids=["symlink", "hardlink"])
def test_link_member_is_422(a, kind):
    tar = make_tar([("manifest.json", manifest_bytes(), REG), ("model.pkl", None, kind)])
    status, body = push_tar(a, tar)
    err = assert_error(status, body, 422, "invalid_bundle")
    assert "link" in err["message"].lower()


def test_symlink_beside_a_model_is_422(a):
    status, body = push_tar(a, bundle_bytes("m", extra=[("data/X.parquet", None, SYM)]))
    assert_error(status, body, 422, "invalid_bundle")


def test_directory_member_is_422(a):
    status, body = push_tar(a, bundle_bytes("m", extra=[("data", None, DIR)]))
    assert_error(status, body, 422, "invalid_bundle")


def test_duplicate_member_is_422(a):
    tar = make_tar(
        [
            ("manifest.json", manifest_bytes(), REG),
            ("model.pkl", MODEL, REG),
            ("model.pkl", MODEL, REG),
        ]
    )
    status, body = push_tar(a, tar)
    err = assert_error(status, body, 422, "invalid_bundle")
    assert "twice" in err["message"]


def test_duplicate_manifest_is_422(a):
    tar = make_tar(
        [
            ("manifest.json", manifest_bytes(), REG),
            ("model.pkl", MODEL, REG),
            ("manifest.json", manifest_bytes(), REG),
        ]
    )
    status, body = push_tar(a, tar)
    assert_error(status, body, 422, "invalid_bundle")


def test_unknown_member_is_422(a):
    status, body = push_tar(a, bundle_bytes("m", extra=[("notes.txt", b"hi", REG)]))
    err = assert_error(status, body, 422, "invalid_bundle")
    assert "notes.txt" in err["message"]


def test_missing_manifest_is_422(a):
    status, body = push_tar(a, make_tar([("model.pkl", MODEL, REG)]))
    assert_error(status, body, 422, "invalid_bundle")


def test_missing_model_is_422(a):
    members = {"data/X.parquet": b"x"}
    tar = make_tar(
        [("manifest.json", manifest_bytes(members=members), REG), ("data/X.parquet", b"x", REG)]
    )
    status, body = push_tar(a, tar)
    assert_error(status, body, 422, "invalid_bundle")


@pytest.mark.parametrize(
    "manifest",
    [
        b"{not json",
        b"[1, 2]",
        json.dumps({**manifest_for("m", {"model.pkl": MODEL}), "format_version": 99}).encode(),
    ],
    ids=["not-json", "not-object", "future-format"],
)
def test_bad_manifest_is_422(a, manifest):
    tar = make_tar([("manifest.json", manifest, REG), ("model.pkl", MODEL, REG)])
    status, body = push_tar(a, tar)
    assert_error(status, body, 422, "invalid_bundle")


def test_manifest_listing_other_members_is_422(a):
    m = manifest_for("m", {"model.pkl": MODEL, "data/X.parquet": b"x"})
    status, body = push_tar(a, bundle_bytes("m", manifest=m))
    assert_error(status, body, 422, "invalid_bundle")


def test_serialization_mismatch_is_422(a):
    m = manifest_for("m", {"model.pkl": MODEL}, serialization="skops")
    status, body = push_tar(a, bundle_bytes("m", manifest=m))
    assert_error(status, body, 422, "invalid_bundle")


def test_member_digest_mismatch_is_422(a):
    m = manifest_for("m", {"model.pkl": b"other bytes than the member"})
    status, body = push_tar(a, bundle_bytes("m", manifest=m))
    err = assert_error(status, body, 422, "digest_mismatch")
    assert "model.pkl" in err["message"]


def test_whole_body_digest_mismatch_is_422(a):
    data = bundle_bytes("m")
    status, body = a.push_bytes("m", data, digest=sha256(data + b"!"))
    err = assert_error(status, body, 422, "digest_mismatch")
    assert err["hint"]


def test_manifest_name_differs_from_url_is_422(a):
    status, body = a.push_bytes("m", bundle_bytes("other"))
    err = assert_error(status, body, 422, "invalid_bundle")
    assert "other" in err["message"]


# -- a client that goes away ----------------------------------------------------------------


def test_truncated_upload_leaves_nothing(agent_factory):
    b = agent_factory(NO_CHECKS)
    data = bundle_bytes("m", model=os.urandom(200_000))
    half = data[: len(data) // 2]
    sock = raw_connect(b)
    try:
        sock.sendall(upload_head(b, "m", len(data)))
        sock.sendall(half)
        # The agent is receiving: its temp file exists. Now the client dies.
        assert wait_until(lambda: part_files(b.home)), b.read_log()
    finally:
        sock.close()
    assert wait_until(lambda: not part_files(b.home)), part_files(b.home)
    assert_nothing_stored(b)
    assert list(agent_blobs(b).iter_digests()) == []
    # The same bundle in full afterwards is version 1.
    status, body = b.push_bytes("m", data)
    assert status == 201 and body["version"] == 1, body
    # The abandoned request ended when its client went away; it did not linger until shutdown.
    b.stop()
    assert " 500 " not in b.read_log(), b.read_log()


def test_truncated_upload_with_lying_digest_is_422(a):
    # Content-Length matches what is sent, but the bytes are a cut-off bundle whose declared
    # digest is that of the whole: the agent refuses, whatever the tar reader makes of it.
    whole = bundle_bytes("m", model=os.urandom(3000))
    status, body = a.push_bytes("m", whole[: len(whole) // 2], digest=sha256(whole))
    assert_error(status, body, 422, "digest_mismatch")


def test_an_upload_whose_write_fails_raises_at_sync_and_leaves_nothing(tmp_path):
    """The blob is written on its own thread: a failing write (a full disk, say) stops the
    writes, lets the upload read on without hanging, and is raised when it is made durable."""
    from handoff_agent.ingest import Upload
    from handoff_agent.store.fs import FileBlobStore

    store = FileBlobStore(tmp_path / "blobs", tmp_path / "tmp")
    upload = Upload(store, limit=1 << 30)
    calls = []

    def full_disk(chunk):
        calls.append(len(chunk))
        raise OSError(28, "No space left on device")

    _hashing, writing = upload.writing
    writing.fn = full_disk
    for _ in range(40):  # more than the queue holds: it never blocks once failed
        upload.write(b"x" * 1024)
    with pytest.raises(OSError, match="No space left"):
        upload.sync()
    assert calls == [1024]
    upload.abort()
    assert list((tmp_path / "tmp").iterdir()) == [] and list((tmp_path / "blobs").iterdir()) == []
