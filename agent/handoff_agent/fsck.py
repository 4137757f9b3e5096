"""``jupyter handoff fsck``: re-hash every blob, check that registry and store agree."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .blobs import BlobStore
from .registry import Registry


@dataclass
class FsckReport:
    blobs: int = 0
    versions: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # referenced, not stored
    orphans: list[str] = field(default_factory=list)  # stored, not referenced
    partial: list[str] = field(default_factory=list)  # leftover temp uploads
    audit_break: int | None = None

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.missing or self.audit_break)

    def lines(self) -> list[str]:
        out = [f"{self.blobs} blobs, {self.versions} versions checked"]
        out += [f"CORRUPT blob {d}" for d in self.corrupt]
        out += [f"MISSING blob {d}" for d in self.missing]
        if self.audit_break is not None:
            out.append(f"AUDIT chain breaks at entry {self.audit_break}")
        out += [
            f"note: unreferenced blob {d} (an upload interrupted before commit)"
            for d in self.orphans
        ]
        out += [f"note: partial upload {p} (never acknowledged)" for p in self.partial]
        out.append("fsck: OK" if self.ok else "fsck: PROBLEMS FOUND")
        return out


def fsck(home: Path) -> FsckReport:
    store = BlobStore(Path(home) / "blobs")
    registry = Registry(Path(home) / "registry.db")
    try:
        refs = registry.digests()
        report = FsckReport(versions=sum(len(v) for v in refs.values()))
        stored = set()
        for digest in store.digests():
            stored.add(digest)
            report.blobs += 1
            if store.hash_file(digest) != digest:
                report.corrupt.append(digest)
        for digest, users in sorted(refs.items()):
            if digest not in stored:
                report.missing.append(f"{digest} ({', '.join(users)})")
        report.orphans = sorted(stored - set(refs))
        report.partial = sorted(p.name for p in store.tmp.glob("upload-*.part"))
        report.audit_break = registry.verify_audit()
        return report
    finally:
        registry.close()
