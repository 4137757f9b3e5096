"""Copy a whole store, every metadata row and every blob, into another one, then check the copy.

Backup, restore and migrate are three uses of one core:
- ``copy_store`` reads the source's metadata in one read transaction (a snapshot: SQLite's
  deferred BEGIN in WAL mode, PostgreSQL's REPEATABLE READ), writes it into the target in one
  write transaction, and copies the blobs before that commits. Blobs are immutable and named by
  their sha256, so those listed after the snapshot began include every one it refers to, and
  each copy is verified as it is written. The target's metadata shows nothing until every blob
  is there; a run cut short is run again, and blobs already copied are skipped.
- ``verify_copy`` checks a copy against the manifest the copy returned: rows per table, the
  audit chain and its head, every blob re-hashed.
- ``migrate`` is the two in a row, from one home's stores into others; ``store.backup`` writes
  and reads backups with the same two.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import Connection, delete, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from .._version import __version__
from ..audit import GENESIS, now
from . import tables as t
from .blobs import DIGEST_RE, BlobCorrupt, BlobError, BlobMissing, BlobStore
from .engine import READ, existing, redact, sqlite_url

FORMAT = "handoff-backup"
FORMAT_VERSION = 1
DB_FILE = "registry.db"  # in a backup, as in a home
BATCH = 1000
OWN = ("schema_migrations",)  # each store records its own migrations; they must agree
MAX_SHOWN = 3  # problems named in the one line of a failed verify


class TransferError(Exception):
    """A refusal to say in one line (a user mistake, or a source or target that will not do)."""


@dataclass
class Manifest:
    """What a copy carried: written as a backup's ``manifest.json``, checked by every verify."""

    migrations: list[str]
    tables: dict[str, int]
    audit: dict  # the chain's head in the snapshot: {"seq", "hash"}
    blobs: list[str]  # every digest copied, sorted
    source: dict = field(default_factory=dict)  # where from (URLs redacted)
    created: str = ""
    handoff_version: str = __version__
    format: str = FORMAT
    backup_format: int = FORMAT_VERSION
    database_sha256: str = ""  # a backup's registry.db as written

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> Manifest:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not a Handoff backup manifest")
        if doc.get("backup_format") != FORMAT_VERSION:
            raise ValueError(f"backup format {doc.get('backup_format')} is not {FORMAT_VERSION}")
        known = cls.__dataclass_fields__
        manifest = cls(**{k: v for k, v in doc.items() if k in known})
        manifest._check_shape()
        return manifest

    def _check_shape(self) -> None:
        """Only well-formed values go on: a digest shapes a path, so each must be one."""
        ok = (
            isinstance(self.migrations, list)
            and all(isinstance(n, str) for n in self.migrations)
            and isinstance(self.tables, dict)
            and all(isinstance(n, int) for n in self.tables.values())
            and isinstance(self.audit, dict)
            and isinstance(self.audit.get("seq"), int)
            and isinstance(self.audit.get("hash"), str)
            and isinstance(self.blobs, list)
            and isinstance(self.database_sha256, str)
        )
        if not ok:
            raise ValueError("a field has the wrong type")
        bad = next(
            (d for d in self.blobs if not isinstance(d, str) or not DIGEST_RE.fullmatch(d)), None
        )
        if bad is not None:
            raise ValueError(f"{bad!r} is not a sha256 digest")

    def summary(self) -> str:
        versions = self.tables.get("versions", 0)
        return (
            f"{versions} versions, {sum(self.tables.values())} rows in {len(self.tables)} "
            f"tables, {len(self.blobs)} blobs, audit head {self.audit['seq']} "
            f"({self.audit['hash'][:16]})"
        )


# -- opening ------------------------------------------------------------------------------------


def open_metadata(url: str):
    """A ``MetadataStore`` for ``url``, or a ``TransferError`` naming it without its password."""
    from .metadata import MetadataStore

    try:
        return MetadataStore.open(url)
    except ValueError as e:  # unsupported URL, missing driver
        raise TransferError(str(e)) from None
    except (SQLAlchemyError, OSError) as e:
        raise TransferError(f"Cannot open the database {redact(url)}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    lines = [s.strip() for s in str(orig).strip().splitlines() if s.strip()]
    return lines[0] if lines else type(orig).__name__


def open_home_metadata(home: Path, url: str = "", create: bool = False):
    """The metadata store a home's agent uses: ``url``, or the SQLite file in the home."""
    if not url:
        path = Path(home) / DB_FILE
        if not create and not path.exists():
            raise TransferError(f"No registry at {home}. Pass --home, or --database-url.")
        url = sqlite_url(path)
    elif not create:
        existing(url)
    return open_metadata(url)


# -- the core -----------------------------------------------------------------------------------


@contextlib.contextmanager
def snapshot(meta) -> Iterator[Connection]:
    """One read transaction on ``meta``: every query inside sees the same moment."""
    with meta.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        else:
            conn = conn.execution_options(**{READ: True})
        with conn.begin():
            yield conn


def _migrations(conn: Connection) -> list[str]:
    return sorted(conn.execute(select(t.schema_migrations.c.name)).scalars())


def _counts(conn: Connection) -> dict[str, int]:
    return {
        name: conn.execute(select(func.count()).select_from(table)).scalar_one()
        for name, table in t.metadata.tables.items()
    }


def _head(conn: Connection) -> dict:
    last = conn.execute(
        select(t.audit.c.seq, t.audit.c.hash).order_by(t.audit.c.seq.desc()).limit(1)
    ).first()
    return {"seq": last[0], "hash": last[1]} if last else {"seq": 0, "hash": GENESIS}


def _referenced(conn: Connection) -> dict[str, str]:
    """Digest -> who refers to it, for the blobs the metadata cannot do without."""
    out = {}
    v, r = t.versions.c, t.reports.c
    q = select(v.model, v.number, v.digest).where(v.pruned.is_(None))  # pruned: gone by design
    for model, number, digest in conn.execute(q):
        out[digest] = f"{model}:{number}"
    q = select(v.model, v.number, r.kind, r.digest).join(t.versions, v.id == r.version_id)
    for model, number, kind, digest in conn.execute(q):
        out[digest] = f"{model}:{number} {kind} report"
    return out


def _is_empty(counts: dict[str, int], head: dict) -> bool:
    rows = {k: n for k, n in counts.items() if k not in OWN and k != "audit_head"}
    return not any(rows.values()) and head["seq"] == 0


def _clear(conn: Connection) -> None:
    for table in reversed(t.metadata.sorted_tables):
        if table.name not in OWN:
            conn.execute(delete(table))


def _copy_rows(src: Connection, dst: Connection) -> dict[str, int]:
    copied = {}
    for table in t.metadata.sorted_tables:  # parents before children (foreign keys)
        if table.name in OWN:
            continue
        n = 0
        q = select(table).order_by(*table.primary_key.columns)
        rows = src.execute(q.execution_options(yield_per=BATCH))
        for part in rows.partitions():
            dst.execute(table.insert(), [dict(r._mapping) for r in part])
            n += len(part)
        copied[table.name] = n
    return copied


def _continue_sequences(conn: Connection) -> None:
    """PostgreSQL: ids given explicitly leave the sequences behind; move each past its max."""
    if conn.dialect.name != "postgresql":
        return  # SQLite's rowid ids follow the largest one present
    quote = conn.dialect.identifier_preparer.quote
    for table in t.metadata.sorted_tables:
        if "id" not in table.c or table.c.id.autoincrement is not True:
            continue  # only the tables whose ``id`` comes from a sequence
        name = quote(table.name)
        seq = conn.execute(
            text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": name}
        ).scalar_one_or_none()
        if seq:
            conn.execute(
                text(f"SELECT setval(:s, COALESCE((SELECT MAX(id) FROM {name}), 0) + 1, false)"),
                {"s": seq},
            )


def copy_store(
    src_meta,
    src_blobs: BlobStore,
    dst_meta,
    dst_blobs: BlobStore,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Copy every row and blob from the source into the target; returns what was copied.

    Refuses a target whose metadata holds anything unless ``force`` (then its rows go, in the
    same transaction). Blobs already in the target are kept: the same name is the same bytes,
    and ``verify_copy`` re-hashes them."""
    say = progress or (lambda _msg: None)
    with snapshot(src_meta) as src, dst_meta.engine.begin() as dst:
        if dst.dialect.name == "postgresql":  # one copy at a time into a database
            dst.execute(text("LOCK TABLE audit_head IN EXCLUSIVE MODE"))
        ours, theirs = _migrations(src), _migrations(dst)
        if ours != theirs:
            raise TransferError(
                f"The source's schema ({_last(ours)}) differs from the target's "
                f"({_last(theirs)}): run both with the same Handoff version."
            )
        if not _is_empty(_counts(dst), _head(dst)):
            if not force:
                raise TransferError(
                    f"The target {dst_meta.url} already holds data. Choose an empty database, "
                    "or pass --force to replace what it holds."
                )
            say("target holds data: --force replaces it")
        _clear(dst)
        manifest = Manifest(
            migrations=ours,
            tables={},
            audit=_head(src),
            blobs=[],
            source={"database": src_meta.url, "blobs": src_blobs.url},
            created=now(),
        )
        referenced = _referenced(src)
        counts = _copy_rows(src, dst)
        _continue_sequences(dst)
        manifest.tables = {**counts, **{k: n for k, n in _counts(dst).items() if k in OWN}}
        say(f"metadata: {sum(counts.values())} rows read in one snapshot")
        # Listed after the snapshot began: blobs are written before the rows that name them.
        digests = sorted(src_blobs.iter_digests())
        lacking = sorted(set(referenced) - set(digests))
        if lacking:
            raise TransferError(
                f"The source lacks blob {lacking[0]} ({referenced[lacking[0]]}) and "
                f"{len(lacking) - 1} more: run `jupyter handoff fsck` on it first."
                if len(lacking) > 1
                else f"The source lacks blob {lacking[0]} ({referenced[lacking[0]]}): run "
                "`jupyter handoff fsck` on it first."
            )
        _copy_blobs(src_blobs, dst_blobs, digests, say)
        manifest.blobs = digests
    return manifest


def _copy_blobs(src: BlobStore, dst: BlobStore, digests: list[str], say) -> None:
    copied = 0
    for digest in digests:
        if dst.exists(digest):
            continue  # an earlier run copied it; verify_copy re-hashes it
        try:
            with src.open(digest) as f:
                dst.put(f, expected=digest)  # hashed as written; a corrupt source raises
        except BlobCorrupt:
            raise TransferError(
                f"The source's blob {digest} is corrupt: run `jupyter handoff fsck` on it."
            ) from None
        except BlobError as e:
            raise TransferError(f"Copying blob {digest} failed: {e}") from None
        copied += 1
    say(f"blobs: {copied} copied, {len(digests) - copied} already there")


def _last(names: list[str]) -> str:
    return names[-1] if names else "no schema"


def verify_copy(meta, blobs: BlobStore, manifest: Manifest) -> list[str]:
    """What in the store disagrees with the manifest; empty when the copy is whole."""
    problems = []
    bad = meta.audit_first_bad()
    if bad is not None:
        problems.append(f"the audit chain breaks at entry {bad}")
    with snapshot(meta) as c:
        counts, head, migrations = _counts(c), _head(c), _migrations(c)
    if migrations != manifest.migrations:
        problems.append(
            f"schema {_last(migrations)}, the manifest says {_last(manifest.migrations)}"
        )
    for name, n in sorted(manifest.tables.items()):
        if counts.get(name) != n:
            problems.append(f"table {name} has {counts.get(name)} rows, the manifest says {n}")
    if head != manifest.audit and bad is None:
        problems.append(
            f"the audit head is {head['seq']}, the manifest says {manifest.audit['seq']}"
        )
    for digest in manifest.blobs:
        try:
            blobs.verify(digest)
        except BlobMissing:
            problems.append(f"blob {digest} is missing")
        except BlobCorrupt:
            problems.append(f"blob {digest} is corrupt (its bytes no longer match its sha256)")
    return problems


def one_line(problems: list[str]) -> str:
    shown = "; ".join(problems[:MAX_SHOWN])
    more = len(problems) - MAX_SHOWN
    return shown + (f"; and {more} more" if more > 0 else "")


def migrate(
    src_meta, src_blobs: BlobStore, dst_meta, dst_blobs: BlobStore, *, force=False, progress=None
) -> tuple[Manifest, list[str]]:
    """A backup straight into the target stores, then the same check."""
    manifest = copy_store(src_meta, src_blobs, dst_meta, dst_blobs, force=force, progress=progress)
    return manifest, verify_copy(dst_meta, dst_blobs, manifest)
