"""Retention: which versions may lose their bundle, and the removal with its audit row.

A pruned version keeps its record, checks, reports, lineage, stages and audit rows; only its
bundle goes. The rule for what stays is here, once: the newest versions of the model, any
version still checking, at a live stage, serving in a slot, or with a delivery still to go.
The caller protects the champion too (``VersionService.champion`` decides it).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import exists, select, update

from . import tables as t
from ._util import as_dict, loads, now
from .base import StoreBase

V = t.versions.c
CHECKING = "checking"  # the one status whose bundle a worker is about to load
# Stages a version can no longer move on from: nothing will load its bundle again.
ENDED_STAGES = ("archived", "rejected")


class RetentionStore(StoreBase):
    def prunable(self, name: str, keep: int, protect: tuple[int, ...] = ()) -> list[dict]:
        """The versions of ``name`` older than its newest ``keep`` whose bundle may go,
        oldest first: number, digest, size and ``graph`` (the size of central's ONNX graph
        of it, which goes too; 0 for none)."""
        return self._prunable(name, keep, protect)

    def _prunable(self, name, keep, protect, version_id=None) -> list[dict]:
        o, d = t.outbox.c, t.deployments.c
        where = [
            V.model == name,
            V.pruned.is_(None),
            V.status != CHECKING,  # pushed (no checks) or concluded
            V.stage.is_(None) | V.stage.in_(ENDED_STAGES),
            ~V.number.in_(_newest(name, keep)),
            ~exists().where(o.version_id == V.id, o.state != "delivered"),
            ~exists().where(d.version_id == V.id),
        ]
        if protect:
            where.append(~V.number.in_(protect))
        if version_id is not None:
            where.append(V.id == version_id)
        w = t.validations.c
        q = (
            select(V.id, V.number, V.digest, V.size, w.onnx, w.conversion)
            .outerjoin(t.validations, w.version_id == V.id)
            .where(*where)
            .order_by(V.number)
        )
        with self._read() as c:
            return [_with_graph(as_dict(r)) for r in c.execute(q)]

    def prune_version(self, name: str, row: dict, keep: int, protect, actor: str) -> bool:
        """Mark ``row`` pruned with its audit row, if it may still go: the first of two
        transactions (``drop_pruned_bundle`` removes the bytes). An agent killed in between
        leaves an orphan blob, which fsck notes and passes, never a version without its
        bundle. False when it may no longer go."""
        with self._tx() as c:
            self._lock_model(c, name)
            if not self._prunable(name, keep, protect, version_id=row["id"]):
                return False
            c.execute(update(t.versions).where(V.id == row["id"]).values(pruned=now()))
            payload = {"digest": row["digest"], "size": row["size"], "keep": keep}
            self.audit_append(actor, "version.prune", f"{name}:{row['number']}", payload)
        return True

    def drop_pruned_bundle(self, version_id: int, remove: Callable[[str], None]) -> bool:
        """``remove`` a pruned version's bundle under the model's lock, the lock a push of
        the same bytes takes to restore it: never bytes a restored version holds again, nor
        bytes another version still holds."""
        with self._tx() as c:
            row = c.execute(select(V.model, V.digest).where(V.id == version_id)).one()
            self._lock_model(c, row.model)
            held = select(V.id).where(V.digest == row.digest, V.pruned.is_(None)).limit(1)
            if self._pruned_at(c, version_id) is None or c.execute(held).first() is not None:
                return False
            remove(row.digest)
        return True

    def drop_pruned_graph(self, version_id: int, actor: str) -> tuple[str, int] | None:
        """Forget a pruned version's ONNX graph (central's, made when it was validated) with
        its audit row: an archived or rejected version never serves again. Returns the
        graph's digest and size when no other version's validation names it, for the
        caller to remove after the commit (a stop in between leaves an orphan fsck passes)."""
        w = t.validations.c
        with self._tx() as c:
            row = c.execute(
                select(w.model, w.number, w.onnx, w.conversion).where(w.version_id == version_id)
            ).first()
            if row is None or row.onnx is None or self._pruned_at(c, version_id) is None:
                return None
            c.execute(update(t.validations).where(w.version_id == version_id).values(onnx=None))
            size = _graph_size(row.conversion)
            payload = {"onnx": row.onnx, "size": size}
            self.audit_append(actor, "version.prune_graph", f"{row.model}:{row.number}", payload)
            shared = select(w.version_id).where(w.onnx == row.onnx).limit(1)
            return None if c.execute(shared).first() else (row.onnx, size)

    def restore_pruned(self, version_id: int, present: Callable[[], bool], actor: str) -> bool:
        """A push of a pruned version's bytes brought them back: the version has its bundle
        again, if the bytes are there under the model's lock."""
        with self._tx() as c:
            row = c.execute(select(V.model, V.number).where(V.id == version_id)).one()
            self._lock_model(c, row.model)
            if self._pruned_at(c, version_id) is None or not present():
                return False
            c.execute(update(t.versions).where(V.id == version_id).values(pruned=None))
            self.audit_append(actor, "version.restore", f"{row.model}:{row.number}", {})
        return True

    def audit_sweep(
        self, actor: str, store_url: str, digests: list[str], freed: int, older_than: float
    ) -> None:
        """The audit row of an orphan sweep (``fsck --sweep``), in its own transaction after
        the deletes: the blobs were no row's, so no row changed with them to commit it with."""
        payload = {
            "count": len(digests),
            "bytes": freed,
            "older_than": older_than,
            "digests": digests,
        }
        with self._tx():
            self.audit_append(actor, "blobs.sweep", store_url, payload)

    def pruned_held(self, version_id: int) -> str | None:
        """The version's pruned mark, read under the model's lock in the caller's
        transaction: a forward queued in it is seen by a prune after it, and one after a
        prune sees the mark."""
        with self._tx() as c:
            model = c.execute(select(V.model).where(V.id == version_id)).scalar_one()
            self._lock_model(c, model)
            return self._pruned_at(c, version_id)

    @staticmethod
    def _pruned_at(c, version_id: int) -> str | None:
        """Read under the model's lock: what a push restoring the bytes may have changed."""
        return c.execute(select(V.pruned).where(V.id == version_id)).scalar()

    @staticmethod
    def _lock_model(c, name: str) -> None:
        """The row lock ``insert_version`` takes (BEGIN IMMEDIATE already holds SQLite's)."""
        c.execute(select(t.models.c.name).where(t.models.c.name == name).with_for_update()).one()


def _with_graph(row: dict) -> dict:
    conversion = row.pop("conversion")
    row["graph"] = _graph_size(conversion) if row.pop("onnx") else 0
    return row


def _graph_size(conversion: str | None) -> int:
    """The ONNX graph's bytes, as the validation's conversion recorded them."""
    return int((loads(conversion) or {}).get("onnx_size") or 0)


def _newest(name: str, keep: int):
    """The numbers of the newest ``keep`` versions of ``name``."""
    inner = select(V.number).where(V.model == name).order_by(V.number.desc()).limit(keep)
    return select(inner.subquery().c.number)
