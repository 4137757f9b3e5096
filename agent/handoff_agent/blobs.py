"""Content-addressed blob store: ``blobs/ab/cdef…`` named by sha256, written once, atomically."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


class BlobCorrupt(Exception):
    """A blob's bytes no longer hash to its name."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp = self.root.parent / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        # The digest is the only input that shapes a path, and it must be 64 hex digits.
        if not DIGEST_RE.fullmatch(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def new_temp(self) -> tuple[int, Path]:
        """A temporary file beside the store, on the same filesystem so rename is atomic."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="upload-", suffix=".part")
        return fd, Path(name)

    def commit(self, temp: Path, digest: str) -> Path:
        """Make an already fsynced temp file the blob ``digest``. Idempotent."""
        final = self.path(digest)
        if final.exists():
            temp.unlink(missing_ok=True)
            return final
        final.parent.mkdir(exist_ok=True)
        os.chmod(temp, 0o444)
        os.replace(temp, final)
        fsync_dir(final.parent)
        fsync_dir(self.root)
        return final

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self.exists(digest):
            return digest
        fd, temp = self.new_temp()
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.commit(temp, digest)
        return digest

    def hash_file(self, digest: str) -> str:
        return self.hash_path(self.path(digest))

    @staticmethod
    def hash_path(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def put_file(self, path: Path) -> str:
        """Make a finished temp file (in ``tmp``) a blob: fsync, hash, rename."""
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        digest = self.hash_path(path)
        self.commit(Path(path), digest)
        return digest

    def verify(self, digest: str) -> Path:
        """Return the blob's path after checking its bytes still match its name."""
        if self.hash_file(digest) != digest:
            raise BlobCorrupt(f"blob {digest} is corrupt")
        return self.path(digest)

    def read_bytes(self, digest: str) -> bytes:
        data = self.path(digest).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise BlobCorrupt(f"blob {digest} is corrupt")
        return data

    def digests(self) -> Iterator[str]:
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir() and len(sub.name) == 2:
                for f in sorted(sub.iterdir()):
                    if DIGEST_RE.fullmatch(sub.name + f.name):
                        yield sub.name + f.name

    def clean_temp(self) -> int:
        """Remove uploads a crash left half-written; they were never acknowledged."""
        n = 0
        for f in self.tmp.glob("*.part"):
            f.unlink(missing_ok=True)
            n += 1
        return n
