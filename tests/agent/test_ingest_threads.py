"""Every upload and hand-over, taken or refused, ends the threads that hashed, wrote and
checked it: a central agent takes bundles for months, and a refused one must cost nothing
after its answer."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
from support import bundle_bytes

from handoff_agent.errors import HandoffError
from handoff_agent.ingest import IngestManager
from handoff_agent.store.fs import FileBlobStore

ENTRY = "0123456789abcdef0123456789abcdef.bundle"
UPLOAD_THREADS = {"blob-hash", "blob-write", "bundle-check"}


def upload_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name in UPLOAD_THREADS}


@pytest.fixture
def ingest(tmp_path):
    store = FileBlobStore(tmp_path / "blobs", tmp_path / "tmp")
    return IngestManager(store, registry=None, limit=1 << 20)


def taken_over_http(ingest, data: bytes, digest: str | None):
    upload = ingest.begin("m", None)  # no declared length: the limit is found while reading
    for at in range(0, len(data), 1 << 16):
        upload.write(data[at : at + (1 << 16)])
    return ingest.store_blob(upload, "m", digest)


def taken_from_spool(ingest, data: bytes, digest: str):
    (ingest.store.spool / ENTRY).write_bytes(data)
    upload = ingest.adopt("m", ENTRY, digest)
    return ingest.store_blob(upload, "m", digest)


def followed(ingest, data: bytes, digest: str):
    """As a kernel's pipelined push: the agent reads the entry while it is written; the
    kernel goes away (the request ends) before it declares the end."""
    (ingest.store.spool / ENTRY).write_bytes(data)
    follow = ingest.follow("m", ENTRY)
    threading.Timer(0.05, follow.cancel).start()
    return ingest.take_followed("m", ENTRY, follow)


@pytest.mark.parametrize(
    "take", [taken_over_http, taken_from_spool, followed], ids=["http", "spool", "followed"]
)
@pytest.mark.parametrize("case", ["whole", "wrong-digest", "truncated", "not-a-tar", "too-large"])
def test_an_upload_taken_or_refused_leaves_no_thread_behind(ingest, take, case):
    good = bundle_bytes("m", model=os.urandom(50_000))
    data = {
        "whole": good,
        "wrong-digest": good,
        "truncated": good[:-1024],
        "not-a-tar": os.urandom(50_000),
        "too-large": os.urandom(ingest.limit + 1),
    }[case]
    digest = hashlib.sha256(good if case == "truncated" else data).hexdigest()
    if case == "wrong-digest":
        digest = "0" * 64
    before = upload_threads()  # another test's, in this process
    if case == "whole" and take is not followed:
        assert take(ingest, data, digest)[0] == digest
    else:
        with pytest.raises(HandoffError):
            take(ingest, data, digest)
    assert upload_threads() <= before
    assert not list(ingest.store.spool.iterdir())
