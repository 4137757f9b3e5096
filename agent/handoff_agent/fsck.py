"""``jupyter handoff fsck``: re-hash every blob, check that registry and store agree."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .forwarding.central import read_envelope
from .store.blobs import BlobCorrupt, BlobStore, open_blob_store


@dataclass
class FsckReport:
    blobs: int = 0
    versions: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # referenced, not stored
    orphans: list[str] = field(default_factory=list)  # stored, not referenced
    partial: list[str] = field(default_factory=list)  # leftover temp uploads
    artefacts: list[str] = field(default_factory=list)  # hand-off blobs, said for what they are
    audit_break: int | None = None
    used_by: dict[str, list[str]] = field(default_factory=dict)  # digest -> who refers to it

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
        out += [
            f"note: unreferenced blob {d} (an upload or conversion interrupted before it was "
            "recorded)"
            for d in self.orphans
        ]
        out += [f"note: partial upload {p} (never acknowledged)" for p in self.partial]
        out.append("fsck: OK" if self.ok else "fsck: PROBLEMS FOUND")
        return out

    def _users(self, digest: str) -> str:
        users = self.used_by.get(digest)
        return f" ({', '.join(users)})" if users else ""


def fsck(home: Path, store: BlobStore | None = None, database_url: str = "") -> FsckReport:
    """``store``: the agent's blob store (default: ``<home>/blobs``)."""
    from .store.metadata import MetadataStore

    store = store or open_blob_store("", Path(home))
    registry = MetadataStore.for_home(home, database_url)
    try:
        refs = registry.digests()
        report = FsckReport(versions=sum(len(v) for v in refs.values()), used_by=refs)
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
        report.orphans = sorted(stored - set(refs))
        named = handoff_artefacts(store, report.orphans)
        report.artefacts = [named[d] for d in report.orphans if d in named]
        report.orphans = [d for d in report.orphans if d not in named]
        report.partial = store.partial_uploads()
        report.audit_break = registry.verify_audit()
        return report
    finally:
        registry.close()


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
