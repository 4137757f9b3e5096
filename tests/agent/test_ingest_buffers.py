"""An upload read into page-aligned buffers: each buffer is reused only once every thread
that was handed it is done, so the stored bytes are the bytes sent, in order."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from handoff_agent.ingest import Upload
from handoff_agent.store.blobs import BlobWriter
from handoff_agent.store.fs import FileBlobStore

MIB = 1 << 20


def send(upload: Upload, data: bytes) -> None:
    """As the detached read does: fill a free buffer, hand it to ``write``."""
    view = memoryview(data)
    while view:
        buffer = upload.buffer()
        n = min(len(view), len(buffer.view))
        buffer.view[:n] = view[:n]
        upload.write(buffer.view[:n], buffer)
        view = view[n:]


def in_time(fn, seconds: float = 60.0):
    """``fn()`` on a thread: a buffer never given back would block it, and this says so."""
    result: list = []
    t = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert result, "a buffer was never given back: the upload waited for it"
    return result[0]


@pytest.fixture
def store(tmp_path):
    return FileBlobStore(tmp_path / "blobs", tmp_path / "tmp")


def test_many_more_chunks_than_buffers_store_the_bytes_sent(store, monkeypatch):
    # past the cached head at 2 MiB, the buffers go to the disk as they are (O_DIRECT)
    monkeypatch.setattr(BlobWriter, "DIRECT_FROM", 2 * MIB)
    data = os.urandom(7 * MIB) * 6 + os.urandom(12_345)  # 42 buffers' worth, a ragged end
    upload = Upload(store, limit=1 << 30)
    in_time(lambda: send(upload, data))
    digest = upload.sync()
    upload.blob.commit(digest)
    assert digest == hashlib.sha256(data).hexdigest()
    with store.open(digest) as f:
        assert f.read() == data
    assert upload._buffers <= Upload.BUFFERS


def test_a_failing_write_still_gives_every_buffer_back(store):
    upload = Upload(store, limit=1 << 30)
    _hashing, writing = upload.writing

    def full_disk(chunk):
        raise OSError(28, "No space left on device")

    writing.fn = full_disk
    in_time(lambda: send(upload, os.urandom(MIB) * 30))  # three times the buffers
    with pytest.raises(OSError, match="No space left"):
        upload.sync()
    upload.abort()


def test_an_upload_past_its_limit_gives_every_buffer_back(store):
    upload = Upload(store, limit=3 * MIB)
    in_time(lambda: send(upload, os.urandom(MIB) * 30))
    assert upload.overflow
