"""``jupyter handoff fsck``: re-hash every blob, check that registry and store agree;
``--sweep`` then removes the old orphans it found (``sweep_orphans``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .forwarding.central import read_envelope
from .store.blobs import BlobCorrupt, BlobStore, open_blob_store
from .vocabulary import SWEEP_GRACE, period_seconds, size_text


@dataclass
class Sweep:
    """What ``fsck --sweep`` was asked: orphans older than ``older_than`` seconds
    (``label``: as the user wrote it) go, or with ``dry_run`` are only listed."""

    older_than: float
    label: str = SWEEP_GRACE
    dry_run: bool = False
    actor: str = "cli"


@dataclass
class SweepReport:
    label: str
    dry_run: bool
    swept: list[tuple[str, int]] = field(default_factory=list)  # (digest, size)
    young: int = 0  # orphans inside the grace period
    in_use: int = 0  # referenced or published again while the sweep ran
    refused: str | None = None

    def lines(self) -> list[str]:
        if self.refused:
            return []  # a refusal: the command says it on stderr
        n, freed = len(self.swept), sum(size for _, size in self.swept)
        kept = [f"{self.young} younger than {self.label} kept"] if self.young else []
        if self.in_use:
            kept.append(f"{self.in_use} in use again kept")
        said = f"{n} orphan blob{'s' * (n != 1)}, {size_text(freed)}"
        said += f" ({', '.join(kept)})" if kept else ""
        if self.dry_run:
            return [f"would sweep {d} ({size_text(size)})" for d, size in self.swept] + [
                f"would sweep {said}; nothing removed (--dry-run)"
            ]
        return [f"swept {said}"]


@dataclass
class FsckReport:
    blobs: int = 0
    versions: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # referenced, not stored
    orphans: list[str] = field(default_factory=list)  # stored, not referenced
    partial: list[str] = field(default_factory=list)  # uploads not yet blobs
    # orphans and partial uploads written within the grace: in flight, not interrupted
    in_flight: set[str] = field(default_factory=set)
    grace: str = SWEEP_GRACE
    artefacts: list[str] = field(default_factory=list)  # hand-off blobs, said for what they are
    audit_break: int | None = None
    used_by: dict[str, list[str]] = field(default_factory=dict)  # digest -> who refers to it
    sweep: SweepReport | None = None
    restored: int = 0  # blobs a sweep that died had set aside, put back

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.missing or self.audit_break)

    def lines(self) -> list[str]:
        out = [f"{self.blobs} blobs, {self.versions} references checked"]
        out += [f"CORRUPT blob {d}{self._users(d)}" for d in self.corrupt]
        out += [f"MISSING blob {d}" for d in self.missing]
        if self.audit_break is not None:
            out.append(f"AUDIT chain breaks at entry {self.audit_break}")
        out += [f"note: {a}" for a in self.artefacts]
        young = f"written within {self.grace}"
        for d in self.orphans:
            if d in self.in_flight:
                out.append(f"note: in flight: blob {d} ({young}; its row may be on its way)")
            else:
                out.append(
                    f"note: unreferenced blob {d} (an upload or conversion interrupted before "
                    "it was recorded)"
                )
        if set(self.orphans) - self.in_flight and self.sweep is None:
            sweep = "`jupyter handoff fsck --sweep`"
            out.append(f"note: {sweep} removes those older than {self.grace}")
        for p in self.partial:
            if p in self.in_flight:
                out.append(f"note: in flight: upload {p} ({young}; still being received)")
            else:
                out.append(
                    f"note: partial upload {p} (interrupted, never acknowledged; the agent "
                    "removes it at its next start)"
                )
        if self.restored:
            out.append(f"note: put back {self.restored} blob(s) a sweep that died had set aside")
        out.append("fsck: OK" if self.ok else "fsck: PROBLEMS FOUND")
        return out + (self.sweep.lines() if self.sweep else [])

    def _users(self, digest: str) -> str:
        users = self.used_by.get(digest)
        return f" ({', '.join(users)})" if users else ""


def fsck(
    home: Path, store: BlobStore | None = None, database_url: str = "", sweep: Sweep | None = None
) -> FsckReport:
    """``store``: the agent's blob store (default: ``<home>/blobs``). ``sweep``: then remove
    the orphans found (``sweep_orphans``). An orphan or a partial upload written within the
    sweep's grace (``SWEEP_GRACE`` unless ``sweep`` says) is noted as in flight, not as
    interrupted: an upload, or a replica's write, commits its blob before its row."""
    from .store.metadata import MetadataStore

    store = store or open_blob_store("", Path(home))
    registry = MetadataStore.for_home(home, database_url)
    try:
        restored = store.restore_aside()  # before the listing, so they are judged as blobs
        refs = registry.digests()
        versions = sum(len(v) for v in refs.values())
        report = FsckReport(versions=versions, used_by=refs, restored=restored)
        stored = set()
        for digest in store.iter_digests():
            stored.add(digest)
            report.blobs += 1
            try:
                store.verify(digest)
            except BlobCorrupt:
                report.corrupt.append(digest)
        for digest, users in sorted(refs.items()):
            if digest not in stored:
                report.missing.append(f"{digest} ({', '.join(users)})")
        report.orphans, named = unreferenced(store, stored, refs)
        report.artefacts = list(named.values())
        partials = store.partial_uploads()
        report.partial = [p.name for p in partials]
        grace = sweep or Sweep(period_seconds(SWEEP_GRACE))
        report.grace, cutoff = grace.label, time.time() - grace.older_than
        report.in_flight = {p.name for p in partials if p.modified >= cutoff}
        for digest in report.orphans:
            info = store.stat(digest)
            if info is not None and info.modified >= cutoff:
                report.in_flight.add(digest)
        report.audit_break = registry.verify_audit()
        if sweep is not None:
            report.sweep = sweep_orphans(registry, store, report, sweep)
        return report
    finally:
        registry.close()


def unreferenced(
    store: BlobStore, stored: set[str], refs: dict[str, list[str]]
) -> tuple[list[str], dict[str, str]]:
    """The one rule for what is an orphan: a stored blob no registry row refers to
    (``refs``, from ``digests()``) that is no hand-off artefact either. Returns the orphans,
    sorted, and the artefacts by digest with what they are."""
    loose = sorted(stored - set(refs))
    named = handoff_artefacts(store, loose)
    return [d for d in loose if d not in named], {d: named[d] for d in loose if d in named}


def sweep_orphans(registry, store: BlobStore, report: FsckReport, sweep: Sweep) -> SweepReport:
    """Remove the orphans this fsck run found (``unreferenced``) that are older than the
    grace period, with one audit row for them all.

    Why a grace period: every writer publishes a blob first and records the row that refers
    to it after (an upload, a check's reports, an ONNX conversion, a prediction-log segment,
    a delivery's body), so until that commit its blob is an orphan by every test there is,
    on this agent or on a replica sharing the stores. A blob's age is its last publish
    (``BlobStore.stat``), and publishing bytes already stored counts, so a writer about to
    refer to an old orphan's bytes makes it young first. Right before each delete the store
    reads the age again and the registry is asked again for that one digest
    (``digests(only=…)``): a row recorded since the listing keeps the blob. The store makes
    that last check and the delete one step where it can (``FileBlobStore.sweep``).

    Refused when the registry cannot be this store's: one naming blobs the store lacks, or
    naming none while the store holds blobs (a wrong --database-url or --home would make
    every blob look unreferenced)."""
    out = SweepReport(sweep.label, sweep.dry_run)
    if report.missing:
        out.refused = (
            f"the registry names {len(report.missing)} blob(s) this store lacks; check that "
            "--home, --database-url and --blob-url name one agent's stores, and fix what "
            "fsck found first."
        )
        return out
    if not report.used_by and report.blobs:
        out.refused = (
            f"the registry refers to none of the {report.blobs} stored blobs; check that "
            "--home, --database-url and --blob-url name one agent's stores."
        )
        return out
    cutoff = time.time() - sweep.older_than

    def referenced(digest: str) -> bool:
        return bool(registry.digests(only=digest))

    for digest in report.orphans:
        info = store.stat(digest)
        if info is None:
            continue  # gone meanwhile (another sweep, a prune)
        if info.modified >= cutoff:
            out.young += 1
        elif sweep.dry_run:
            out.swept.append((digest, info.size))
        elif (size := store.sweep(digest, cutoff, referenced)) is None:
            out.in_use += store.stat(digest) is not None
        else:
            out.swept.append((digest, size))
    if out.swept and not sweep.dry_run:
        registry.audit_sweep(
            sweep.actor,
            store.url,
            [d for d, _ in out.swept],
            sum(size for _, size in out.swept),
            sweep.older_than,
        )
    return out


def handoff_artefacts(store: BlobStore, digests: list[str]) -> dict[str, str]:
    """What the forwarder stores besides versions, by digest: delivery envelopes (kept until
    delivered, so a retry sends the same bytes) and the skops bundles converted for central
    inside them."""
    named: dict[str, str] = {}
    for digest in digests:
        envelope = read_envelope(store, digest)
        if envelope is None:
            continue
        local = envelope.get("local") or {}
        version = f"{local.get('model')}:{local.get('number')}"
        named[digest] = f"delivery envelope {digest} for {version} (what the forwarder sends)"
        inner = envelope.get("bundle_digest")
        if inner in digests and inner != local.get("digest"):
            named[inner] = f"converted bundle {inner} ({version} as skops, sent to central)"
    return named
