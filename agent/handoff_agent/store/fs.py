"""Blobs on the local filesystem: ``blobs/ab/cdef…``, written once (temp file, fsync, rename,
fsync of the directories) and read-only after."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .blobs import (
    DIGEST_RE,
    BlobInfo,
    BlobMissing,
    BlobWriter,
    PartialUpload,
    SpoolRefused,
    VerifyingReader,
    check_digest,
    corrupt,
    free_space,
    intact,
    put_stream,
    sha256_file,
    spool_partials,
)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


SPOOL_ENTRY = re.compile(r"^[0-9a-f]{32}\.bundle$")


class FileBlobStore:
    def __init__(self, root: Path, tmp: Path):
        self.root, self.tmp = Path(root).absolute(), Path(tmp).absolute()  # (a --home typed
        self.root.mkdir(parents=True, exist_ok=True)  # relative: its URL must still be a URL)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.url = self.root.as_uri()
        # Where a kernel on this machine writes a bundle for the agent to adopt: beside the
        # temp dir, on the store's filesystem (adopting is a rename), private to this user.
        self.spool = self.tmp.parent / "spool"
        self.spool.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.spool, 0o700)

    def adopt(self, entry: str) -> BlobWriter:
        """Take the spool entry ``entry`` (a name the kernel chose, 32 hex digits and
        ``.bundle``): move it out of the spool, so nobody else can claim it, and open it as a
        blob to verify and commit. The name never makes a path but inside the spool."""
        if not isinstance(entry, str) or not SPOOL_ENTRY.fullmatch(entry):
            raise SpoolRefused("its name is not 32 hex digits followed by .bundle")
        claimed = self.tmp / f"upload-{secrets.token_hex(8)}.part"
        try:
            os.rename(self.spool / entry, claimed)  # a link is moved, never followed
        except FileNotFoundError:
            raise SpoolRefused("there is no such entry in the spool") from None
        return BlobWriter.adopt(claimed, self._publish)

    def _path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest[2:]

    def _open(self, digest: str) -> BinaryIO:
        try:
            return open(self._path(digest), "rb")
        except FileNotFoundError:
            raise BlobMissing(f"no blob {digest}") from None

    def _publish(self, spool: Path, digest: str, size: int) -> None:
        final = self._path(digest)
        if intact(self, digest) and self._refresh(final):
            return  # written once: the same digest is the same bytes
        # New, or stored bytes gone bad: the same bytes pushed again replace them (what the
        # corrupt blob's hint tells a user to do)
        final.parent.mkdir(exist_ok=True)
        os.chmod(spool, 0o444)
        os.utime(spool)  # its age starts now, however long ago a kernel spooled it
        os.replace(spool, final)
        fsync_dir(final.parent)
        fsync_dir(self.root)

    def writer(self) -> BlobWriter:
        return BlobWriter(self.tmp, self._publish)

    def free_bytes(self) -> int:
        return free_space(self.tmp)

    def put(self, source: BinaryIO | Iterable[bytes], expected: str | None = None) -> str:
        return put_stream(self, source, expected)

    def _refresh(self, path: Path) -> bool:
        """Bytes published again are young again: their writer records its reference next,
        and an orphan sweep (``sweep``) judges by this time. False when they are gone (swept
        meanwhile, or another user's, whose time only they may set): the writer then
        publishes them anew."""
        try:
            os.utime(path)
        except (FileNotFoundError, PermissionError):
            return False
        return True

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self._refresh(self._path(digest)):
            return digest
        return put_stream(self, [data], digest)

    def exists(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self._path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobMissing(f"no blob {digest}") from None

    def open(self, digest: str) -> VerifyingReader:
        return VerifyingReader(self._open(digest), digest)

    def read_bytes(self, digest: str) -> bytes:
        with self._open(digest) as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != digest:
            raise corrupt(digest)
        return data

    def verify(self, digest: str) -> None:
        with self._open(digest) as f:
            if sha256_file(f) != digest:
                raise corrupt(digest)

    def local_copy(self, digest: str) -> BinaryIO:
        # The blob itself, opened read-only (blobs are 0444) and hashed before it is handed
        # out: a copy would cost a full write of every bundle for every check run.
        f = self._open(digest)
        try:
            if sha256_file(f) != digest:
                raise corrupt(digest)
            f.seek(0)
        except BaseException:
            f.close()
            raise
        return f

    def iter_digests(self) -> Iterator[str]:
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir() and len(sub.name) == 2:
                for f in sorted(sub.iterdir()):
                    if DIGEST_RE.fullmatch(sub.name + f.name):
                        yield sub.name + f.name

    def delete(self, digest: str) -> None:
        path = self._path(digest)
        if path.exists():
            path.unlink()
            fsync_dir(path.parent)

    def stat(self, digest: str) -> BlobInfo | None:
        try:
            st = self._path(digest).stat()
        except FileNotFoundError:
            return None
        return BlobInfo(st.st_size, st.st_mtime)

    def sweep(self, digest: str, cutoff: float, referenced) -> int | None:
        """The blob is renamed aside first (atomic, in its own directory, where no listing
        sees it), then judged: a writer's ``_refresh`` either came before the rename (its
        time is the one judged, and the blob goes back) or finds nothing and publishes the
        bytes anew. So no writer is left holding a reference to bytes swept under it. Bytes
        kept go back by a link, never over a copy a writer published meanwhile (the same
        bytes). A crash between rename and unlink leaves ``<name>.<hex>.sweep`` beside it:
        ``restore_aside`` puts it back (at start, and before fsck lists the blobs)."""
        path = self._path(digest)
        aside = path.with_name(f"{path.name}.{secrets.token_hex(8)}.sweep")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return None
        keep = True
        try:
            st = os.stat(aside)
            size = st.st_size
            keep = st.st_mtime >= cutoff or bool(referenced(digest))
        finally:
            if keep:
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)
            aside.unlink(missing_ok=True)  # restore_aside may have put it back meanwhile
            fsync_dir(path.parent)
        return None if keep else size

    def restore_aside(self) -> int:
        """Put back the blobs a sweep that died set aside (``sweep``): they may have been
        referenced since. Safe beside a running sweep: it can only keep a blob it was about
        to delete, never delete one. Returns how many went back."""
        n = 0
        for aside in self.root.glob("??/*.sweep"):
            path = aside.with_name(aside.name.split(".", 1)[0])
            if DIGEST_RE.fullmatch(aside.parent.name + path.name):
                with contextlib.suppress(FileExistsError, FileNotFoundError):
                    os.link(aside, path)
                    n += 1
                aside.unlink(missing_ok=True)
                fsync_dir(aside.parent)
        return n

    def partial_uploads(self) -> list[PartialUpload]:
        return spool_partials(self.tmp)

    def clean_temp(self) -> int:
        n = self.restore_aside()
        for f in self.tmp.glob("*.part"):
            f.unlink(missing_ok=True)
            n += 1
        return n
