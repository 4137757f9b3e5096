"""The blob interface: bytes named by their sha256, written once, verified whenever read.

Two backends implement it: the filesystem (``fs.py``, the default) and S3-compatible storage
(``s3.py``). No caller builds or receives a backend's own path or key: a writer spools and
hashes, ``open`` streams, and ``local_copy`` hands a verified read-only file to code that needs
one (a sandboxed worker gets its descriptor).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol, runtime_checkable

from ..writeback import CACHED_HEAD, DirectAppender, drop_behind, start_write_back

DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20
WRITEBACK = 64 << 20  # a large upload's pages go to disk this often, not all at the fsync


class BlobInfo(NamedTuple):
    """A stored blob's size and when it was last written or published again (epoch seconds):
    the age an orphan sweep judges by."""

    size: int
    modified: float


class PartialUpload(NamedTuple):
    """An upload not yet a blob (a local spool file, an S3 multipart upload) and when it was
    last written or started (epoch seconds): fsck tells one in flight from one abandoned."""

    name: str
    modified: float


class BlobError(Exception):
    """Something is wrong with a blob or the store."""


class BlobCorrupt(BlobError):
    """A blob's bytes no longer hash to its name."""


class BlobMissing(BlobError, FileNotFoundError):
    """No blob has this digest."""


class BlobUnavailable(BlobError):
    """The store cannot be reached or refused the request; retrying later may work."""


class DigestMismatch(BlobError, ValueError):
    """The bytes written do not hash to the digest the writer was promised."""


class SpoolRefused(BlobError):
    """A spool entry is not a plain file this user wrote (a link, a fifo, too large...)."""


def _remove(path: Path) -> None:
    """Remove a refused spool entry (a link is removed, never what it points to)."""
    try:
        os.unlink(path)
    except IsADirectoryError:
        with contextlib.suppress(OSError):
            os.rmdir(path)
    except OSError:
        pass


def check_digest(digest: str) -> str:
    """The digest is the only input that shapes a path or key, and it must be 64 hex digits."""
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest


def sha256_file(f: BinaryIO | str | Path) -> str:
    """The sha256 of a file's bytes (a path, or an open file read from where it stands)."""
    if isinstance(f, (str, Path)):
        with open(f, "rb") as opened:
            return sha256_file(opened)
    h = hashlib.sha256()
    while chunk := f.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def corrupt(digest: str) -> BlobCorrupt:
    return BlobCorrupt(f"blob {digest} is corrupt: its bytes no longer match its digest")


class BlobWriter:
    """A blob being written: spooled to a private local temp file and hashed as bytes arrive.
    Nothing appears under a content name until ``commit``; ``abort`` leaves nothing behind."""

    DIRECT_FROM = CACHED_HEAD  # past this, ``append`` writes around the page cache

    def __init__(self, tmp: Path, publish):
        self._out: DirectAppender | None = None
        self._fd, name = tempfile.mkstemp(dir=tmp, prefix="upload-", suffix=".part")
        self._spool = Path(name)
        self._publish = publish  # (spool path, digest, size) -> None: the backend's commit
        self._sha = hashlib.sha256()
        self.size = 0
        self._digest: str | None = None

    def write(self, chunk: bytes) -> int:
        self.hash(chunk)
        return self.append(chunk)

    def hash(self, chunk: bytes) -> None:
        """The digest's half of ``write``. An upload calls ``hash`` and ``append`` on two threads
        (both let go of the GIL), each with every chunk in order."""
        self._sha.update(chunk)

    def append(self, chunk: bytes) -> int:
        """The file's half of ``write``."""
        before, self.size = self.size, self.size + len(chunk)
        if self._out is None:
            self._out = DirectAppender(self._fd, self.DIRECT_FROM)
        self._out.write(chunk)
        if before // WRITEBACK != self.size // WRITEBACK and self.size > 2 * WRITEBACK:
            # the window before the one just finished, one window behind the writes
            start_write_back(
                self._fd, self.size // WRITEBACK * WRITEBACK - 2 * WRITEBACK, WRITEBACK
            )
        return len(chunk)

    @classmethod
    def adopt(cls, path: Path, publish) -> BlobWriter:
        """A writer over a file another process wrote, already moved where only the store
        names it (``FileBlobStore.adopt``). Opened without following a link and without
        blocking on a fifo; refused (and removed) unless it is a regular file with one link
        that this user owns. ``absorb`` hashes it; ``commit`` then links it in: no copy."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            _remove(path)
            raise SpoolRefused(f"it cannot be opened as a plain file ({e.strerror})") from None
        st = os.fstat(fd)
        why = (
            "it is not a regular file"
            if not stat.S_ISREG(st.st_mode)
            else "it has other hard links"
            if st.st_nlink != 1
            else "another user owns it"
            if st.st_uid != os.getuid()
            else None
        )
        if why:
            os.close(fd)
            _remove(path)
            raise SpoolRefused(why)
        os.set_blocking(fd, True)
        self = cls.__new__(cls)
        self._fd, self._spool, self._publish, self._out = fd, Path(path), publish, None
        self._sha, self.size, self._digest = hashlib.sha256(), 0, None
        return self

    def absorb(self, feed, limit: int | None = None, more=None) -> None:
        """Read an adopted file once from its start, handing each chunk to ``feed``, which
        calls ``hash`` with it, in order (as an upload calls ``hash`` and ``append``).
        Refuses a file past ``limit`` bytes. ``more(size)``, for a file still being
        written: called at each end reached, True to read on (it waits for more), False
        once the writer is done; it raises ``SpoolRefused`` to give up."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._sha, self.size = hashlib.sha256(), 0
        # The disk writes the file back while it is read and hashed from the page cache:
        # ``finish``'s fsync then has little left to do, instead of all of it after the hash.
        self._flushing = threading.Thread(target=_quiet_fsync, args=(self._fd,), daemon=True)
        self._flushing.start()
        while True:
            chunk = os.read(self._fd, CHUNK)
            if not chunk:
                if more is not None and more(self.size):
                    continue
                break
            before, self.size = self.size, self.size + len(chunk)
            if limit is not None and self.size > limit:
                raise SpoolRefused(f"it is larger than {limit} bytes")
            feed(chunk)
            drop_behind(self._fd, before, self.size)

    def fileno(self) -> int:
        """For a worker that writes the blob itself; call ``rehash`` once it is done."""
        return self._fd

    def rehash(self) -> str:
        """Hash what is in the spool now (written through ``fileno`` by someone else)."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        with open(os.dup(self._fd), "rb") as f:
            self._sha = hashlib.sha256()
            self.size = 0
            while chunk := f.read(CHUNK):
                self._sha.update(chunk)
                self.size += len(chunk)
        return self._sha.hexdigest()

    def finish(self) -> str:
        """Flush to disk and stop writing; returns the digest."""
        if self._digest is None:
            self._flushed()
            if self._out is not None:
                self._out.close()
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            self._digest = self._sha.hexdigest()
        return self._digest

    def reader(self) -> BinaryIO:
        """The bytes written so far, to validate before they become a blob."""
        self.finish()
        return open(self._spool, "rb")

    def commit(self, expected: str | None = None) -> str:
        """Make the bytes the blob named by their digest, durably; refuse a mismatch."""
        digest = self.finish()
        try:
            if expected is not None and expected != digest:
                raise DigestMismatch(f"the bytes hash to {digest}, not to {expected}")
            self._publish(self._spool, digest, self.size)
        except BaseException:
            self.abort()
            raise
        spool, self._spool = self._spool, None
        if spool.exists():  # not taken: the blob was there already, or was copied
            _remove_soon(spool)
        return digest

    def _flushed(self) -> None:
        """Wait for the early write-back, so its fd is never closed under it."""
        flushing, self._flushing = getattr(self, "_flushing", None), None
        if flushing is not None:
            flushing.join()

    def abort(self) -> None:
        self._flushed()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._spool is not None:  # None once committed
            self._spool.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.abort()


def _remove_soon(path: Path) -> None:
    """Remove bytes the store did not take, off the caller's path: removing a big file
    waits for its write-back (10 ms for 43 MB), which a push's answer need not. A crash
    before it leaves a temp file, which the store's ``clean_temp`` removes at start."""
    threading.Thread(target=path.unlink, kwargs={"missing_ok": True}, daemon=True).start()


def _quiet_fsync(fd: int) -> None:
    with contextlib.suppress(OSError):  # finish() fsyncs again and raises what is wrong
        os.fsync(fd)


class VerifyingReader:
    """A blob's byte stream that raises ``BlobCorrupt`` at its end when the bytes read do not
    hash to its digest. Read it to the end before trusting what it gave."""

    def __init__(self, raw, digest: str):
        self._raw, self.digest = raw, digest
        self._sha = hashlib.sha256()
        self._checked = False

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read() if size is None or size < 0 else self._raw.read(size)
        if data:
            self._sha.update(data)
            if size is None or size < 0:
                self._check()
        else:
            self._check()
        return data

    def _check(self) -> None:
        if not self._checked:
            self._checked = True
            if self._sha.hexdigest() != self.digest:
                raise corrupt(self.digest)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> VerifyingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed bytes. Every method that takes a digest refuses one that is not 64
    hex digits; every read is verified against the digest."""

    url: str  # where the blobs live, for logs and status; never a credential

    def writer(self) -> BlobWriter:
        """A new blob to write, hash and then ``commit`` (or ``abort``)."""
        ...

    def put(self, source: BinaryIO | Iterable[bytes], expected: str | None = None) -> str:
        """Store a stream's bytes; durable when it returns. Refuses a digest mismatch."""
        ...

    def put_bytes(self, data: bytes) -> str: ...

    def exists(self, digest: str) -> bool: ...

    def size(self, digest: str) -> int: ...

    def open(self, digest: str) -> VerifyingReader:
        """Stream the blob; the read that reaches its end raises ``BlobCorrupt`` if damaged."""
        ...

    def read_bytes(self, digest: str) -> bytes:
        """The whole blob, verified."""
        ...

    def verify(self, digest: str) -> None:
        """Raise ``BlobCorrupt`` (or ``BlobMissing``) unless the blob matches its digest."""
        ...

    def local_copy(self, digest: str) -> BinaryIO:
        """A verified, read-only, seekable local file holding the blob, for code that needs a
        file (a worker gets its descriptor). Close it when done (``with``); a temporary copy
        is gone then. Never the store's own path."""
        ...

    def iter_digests(self) -> Iterator[str]:
        """Every stored digest, sorted (fsck, backup)."""
        ...

    def delete(self, digest: str) -> None: ...

    def stat(self, digest: str) -> BlobInfo | None:
        """Size and last publish time, or None when no blob has this digest. Publishing bytes
        the store already holds counts as writing them again (``modified`` moves to now), so
        a writer about to record a reference to an old unreferenced blob makes it young."""
        ...

    def sweep(self, digest: str, cutoff: float, referenced) -> int | None:
        """Delete an unreferenced blob unless it was published at or after ``cutoff`` (epoch
        seconds) or ``referenced(digest)``, asked right before the delete, is true; its size
        when deleted, None when kept (or already gone)."""
        ...

    def restore_aside(self) -> int:
        """Put back what a sweep that died set aside while judging it; returns how many."""
        ...

    def clean_temp(self) -> int:
        """Remove what a crash left half-written (never acknowledged), and put back what a
        sweep set aside (``restore_aside``); returns how many."""
        ...

    def partial_uploads(self) -> list[PartialUpload]:
        """Uploads not yet blobs (in flight, or left half-written by a crash), for fsck."""
        ...

    def free_bytes(self) -> int:
        """Room left on the disk where writers spool (for the filesystem store, where its
        blobs live too): what the agent checks a bundle's size against."""
        ...


def intact(store, digest: str) -> bool:
    """Whether a stored blob still matches its digest: a publish of the same bytes replaces
    one that does not (what the corrupt blob's hint tells a user to do: push it again)."""
    try:
        store.verify(digest)
    except (BlobCorrupt, BlobMissing):
        return False
    return True


def spool_partials(tmp: Path) -> list[PartialUpload]:
    """The uploads spooling in ``tmp`` (``BlobWriter``'s files), with their last write."""
    out = []
    for path in sorted(tmp.glob("upload-*.part")):
        with contextlib.suppress(FileNotFoundError):  # committed or aborted meanwhile
            out.append(PartialUpload(path.name, path.stat().st_mtime))
    return out


def free_space(directory: Path) -> int:
    """Bytes an unprivileged writer may still put on ``directory``'s filesystem."""
    return shutil.disk_usage(directory).free


def put_stream(store, source: BinaryIO | Iterable[bytes], expected: str | None = None) -> str:
    """``put`` for every backend: through a writer, hashing as it writes."""
    with store.writer() as w:
        if hasattr(source, "read"):
            while chunk := source.read(CHUNK):
                w.write(chunk)
        else:
            for chunk in source:
                w.write(chunk)
        return w.commit(expected)


def open_blob_store(
    url: str, home: Path, endpoint_url: str = "", multipart_threshold: int = 8 << 20
) -> BlobStore:
    """The one factory: ``""`` is ``<home>/blobs``; ``file:///path`` a directory;
    ``s3://bucket/prefix`` an S3-compatible bucket (boto3 is imported only then)."""
    home = Path(home)
    if not url:
        from .fs import FileBlobStore

        return FileBlobStore(home / "blobs", home / "tmp")
    if url.startswith("file://"):
        from .fs import FileBlobStore

        root = Path(url.removeprefix("file://"))
        if not root.is_absolute():
            raise ValueError(f"blob_url {url!r}: a file URL needs an absolute path (file:///…)")
        return FileBlobStore(root, root / ".tmp")
    if url.startswith("s3://"):
        from .s3 import S3BlobStore

        return S3BlobStore.from_url(
            url, home / "tmp", endpoint_url=endpoint_url, multipart_threshold=multipart_threshold
        )
    raise ValueError(
        f"blob_url {url!r} is neither empty (<home>/blobs), file:///path nor s3://bucket/prefix"
    )
