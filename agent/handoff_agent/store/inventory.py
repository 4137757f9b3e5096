"""The reads the inventory and the dossier need: newest versions per model and stage, the
data later versions used, the trust list's history, stage histories and audit segments."""

from __future__ import annotations

from sqlalchemy import func, select

from . import tables as t
from ._util import as_dict
from .base import StoreBase

V = t.versions.c
A = t.audit.c


class InventoryStore(StoreBase):
    def latest_numbers(self) -> dict[str, int]:
        """Each model's newest version number."""
        with self._read() as c:
            return dict(c.execute(select(V.model, func.max(V.number)).group_by(V.model)).all())

    def numbers_in_stage(self, stage: str) -> dict[str, int]:
        """Each model's newest version currently in ``stage``."""
        q = select(V.model, func.max(V.number)).where(V.stage == stage).group_by(V.model)
        with self._read() as c:
            return dict(c.execute(q).all())

    def later_data(self, model: str, number: int) -> list[dict]:
        """The datasets versions pushed after ``number`` used: number, role, fingerprint."""
        lin = t.lineage.c
        q = (
            select(V.number, lin.role, lin.dataset)
            .join(t.versions, V.id == lin.version_id)
            .where(V.model == model, V.number > number, lin.dataset.is_not(None))
            .order_by(V.number, lin.id)
        )
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]

    def trust_audit(self) -> list[dict]:
        """Every change of the trust list, as the audit log recorded it."""
        q = (
            select(A.seq, A.time, A.actor, A.action, A.subject, A.payload)
            .where(A.action.in_(("trust.add", "trust.remove")))
            .order_by(A.seq)
        )
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]

    def first_audit_seq(self, subject: str) -> int | None:
        with self._read() as c:
            return c.execute(select(func.min(A.seq)).where(A.subject == subject)).scalar()

    def audit_from(self, seq: int) -> list[dict]:
        """Every audit row from ``seq`` to the head, in order: the chain a verifier re-hashes."""
        q = select(t.audit).where(A.seq >= seq).order_by(A.seq)
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]

    def model_stage_history(self, model: str) -> list[dict]:
        """Every stage change of every version of ``model``, oldest first."""
        s = t.stages.c
        q = (
            select(V.number, s.stage, s.since, s.by, s.comment)
            .join(t.versions, V.id == s.version_id)
            .where(V.model == model)
            .order_by(s.since, s.id)
        )
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]
