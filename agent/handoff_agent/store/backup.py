"""Backups: a directory holding ``manifest.json``, ``registry.db`` (a SQLite metadata store of
the same schema; an older Handoff's is read through an upgraded copy) and ``blobs/ab/cdef…``
(a file blob store), made by ``transfer.copy_store`` under a temporary name, verified, then
renamed into place. Restore checks it, copies it into the target the same way, and checks the
target against its manifest."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .blobs import BlobStore
from .engine import sqlite_url
from .fs import FileBlobStore, fsync_dir
from .migrations import MIGRATIONS
from .transfer import (
    DB_FILE,
    Manifest,
    TransferError,
    _last,
    copy_store,
    one_line,
    verify_copy,
)

MANIFEST = "manifest.json"
BLOBS_DIR = "blobs"


def backup(src_meta, src_blobs: BlobStore, dest: Path, progress=None) -> Manifest:
    """Write a backup directory at ``dest`` (which must not exist); verified before it appears."""
    dest = Path(dest).absolute()
    if dest.exists() or dest.is_symlink():
        raise TransferError(
            f"{dest} already exists: a backup never overwrites. Give a new directory name."
        )
    if not dest.parent.is_dir():
        raise TransferError(f"{dest.parent} is not a directory: create it first.")
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        meta, blobs = _backup_stores(work)
        try:
            manifest = copy_store(src_meta, src_blobs, meta, blobs, progress=progress)
            problems = verify_copy(meta, blobs, manifest)
        finally:
            meta.close()
        if problems:
            raise TransferError(f"The backup did not verify: {one_line(problems)}")
        shutil.rmtree(work / BLOBS_DIR / ".tmp", ignore_errors=True)
        manifest.database_sha256 = _sha256(work / DB_FILE)
        _write_durably(work / MANIFEST, manifest.to_json().encode())
        work.chmod(0o700)  # it holds token hashes and the whole registry
        os.rename(work, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def leftovers(dest: Path) -> list[Path]:
    """Work directories of backups to ``dest`` that did not finish (killed: nothing could
    remove them). They hold token hashes and a copy of the registry: the user is told."""
    dest = Path(dest).absolute()
    return sorted(dest.parent.glob(f".{dest.name}.partial-*"))


def _backup_stores(root: Path):
    from .metadata import MetadataStore

    meta = MetadataStore.open(sqlite_url(root / DB_FILE))
    return meta, FileBlobStore(root / BLOBS_DIR, root / BLOBS_DIR / ".tmp")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(path.parent)


def read_manifest(src: Path) -> Manifest:
    src = Path(src)
    if not src.is_dir():
        raise TransferError(f"{src} is not a directory: give the directory `backup` wrote.")
    try:
        manifest = Manifest.from_json((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise TransferError(f"{src} is not a Handoff backup: it has no {MANIFEST}.") from None
    except (ValueError, TypeError) as e:
        raise TransferError(f"{src / MANIFEST} is not a Handoff backup manifest ({e}).") from None
    head = sorted(name for name, _ in MIGRATIONS)
    if not set(manifest.migrations) <= set(head):  # an older one is upgraded as it is read
        raise TransferError(
            f"The backup's schema ({_last(manifest.migrations)}, Handoff "
            f"{manifest.handoff_version}) is newer than this Handoff's ({_last(head)}): use a "
            "Handoff at least as new as the one that wrote it."
        )
    return manifest


def check_database(src: Path) -> tuple[Manifest, list[str]]:
    """The backup's manifest, and whether its database file changed since; refused when the
    file is missing, or changed past reading (truncated, overwritten): nothing can come of it."""
    src = Path(src).absolute()
    manifest = read_manifest(src)
    db = src / DB_FILE
    if not db.is_file():
        raise TransferError(f"{src} is not a whole backup: {DB_FILE} is missing.")
    if not manifest.database_sha256 or _sha256(db) == manifest.database_sha256:
        return manifest, []
    damage = _unreadable(db)
    if damage is not None:
        raise TransferError(
            f"{DB_FILE} changed after the backup was written and cannot be read ({damage})."
        )
    return manifest, [f"{DB_FILE} changed after the backup was written"]


def _unreadable(path: Path) -> str | None:
    """Why SQLite cannot read the file (opened read-only: a backup is never written), or None."""
    import sqlite3
    from urllib.parse import quote

    try:
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)) as c:
            row = c.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as e:
        return str(e)
    return None if row and row[0] == "ok" else str(row[0] if row else "no answer")


@contextlib.contextmanager
def open_backup(
    src: Path, checked: tuple[Manifest, list[str]] | None = None
) -> Iterator[tuple[Manifest, object, FileBlobStore, list[str]]]:
    """The backup's manifest and stores, and the problems found before opening them (its
    database file changed). The stores are only read."""
    src = Path(src).absolute()
    manifest, problems = checked or check_database(src)  # ``checked``: its answer already
    from .metadata import MetadataStore

    head = sorted(name for name, _ in MIGRATIONS)
    with contextlib.ExitStack() as stack:
        db = src / DB_FILE
        if manifest.migrations != head:  # an older Handoff's: upgrade a copy, never the backup
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="handoff-")))
            shutil.copyfile(db, work / DB_FILE)
            db, manifest = work / DB_FILE, dataclasses.replace(manifest, migrations=head)
        meta = MetadataStore.open(sqlite_url(db))
        stack.callback(meta.close)
        yield manifest, meta, _ReadOnlyBlobs(src / BLOBS_DIR), problems


class _ReadOnlyBlobs(FileBlobStore):
    """A backup's blobs, read where they lie (no temporary directory made inside it)."""

    def __init__(self, root: Path):
        self.root = self.tmp = Path(root).absolute()
        self.url = self.root.as_uri()


def verify_backup(src: Path) -> tuple[Manifest, list[str]]:
    with open_backup(src) as (manifest, meta, blobs, problems):
        return manifest, verify_copy(meta, blobs, manifest) + problems


def restore(
    src: Path, dst_meta, dst_blobs: BlobStore, *, force: bool = False, progress=None, checked=None
) -> tuple[Manifest, list[str]]:
    """Check the backup, copy it into the target, then check the target against it.
    ``checked``: ``check_database(src)``'s answer, when the caller asked it first."""
    with open_backup(src, checked) as (manifest, meta, blobs, problems):
        problems = verify_copy(meta, blobs, manifest) + problems
        if problems:
            raise TransferError(f"The backup fails verification: {one_line(problems)}")
        copy_store(meta, blobs, dst_meta, dst_blobs, force=force, progress=progress)
    return manifest, verify_copy(dst_meta, dst_blobs, manifest)
