"""The rows of central's validation runs (``serving.validation``): one per version, queued in
the transaction that made it ``validated``, claimed with a lease by the replica that runs it,
and finished with the backend, the parity result and the load test's gate."""

from __future__ import annotations

import json
import time

from sqlalchemy import or_, select

from . import tables as t
from ._util import as_dict, loads, now
from .base import StoreBase

W = t.validations.c
JSON_FIELDS = ("conversion", "loadtest")


def _row(r) -> dict:
    out = as_dict(r)
    for key in JSON_FIELDS:
        out[key] = loads(out.get(key))
    return out


class ValidationStore(StoreBase):
    def validation_queue(self, version_id: int, model: str, number: int, by: str) -> None:
        """(Re)start a version's validation: queued, unclaimed, results cleared."""
        values = {
            "model": model,
            "number": number,
            "state": "queued",
            "backend": None,
            "onnx": None,
            "conversion": None,
            "loadtest": None,
            "verdict": None,
            "reason": None,
            "claimed_by": None,
            "claimed_until": None,
            "queued": now(),
            "finished": None,
        }
        with self._tx() as c:
            stmt = self._insert(t.validations).values(version_id=version_id, **values)
            c.execute(stmt.on_conflict_do_update(index_elements=["version_id"], set_=values))
            self.audit_append(by, "validation.queued", f"{model}:{number}", {})

    def validation_claimable(self, owner: str) -> list[int]:
        """Versions whose validation is unfinished and free: never claimed, claimed by this
        ``owner`` before a restart, or whose lease ran out (a replica died)."""
        with self._read() as c:
            q = select(W.version_id).where(
                W.state != "done",
                or_(
                    W.claimed_by.is_(None),
                    W.claimed_by == owner,
                    W.claimed_until < time.time(),
                ),
            )
            return list(c.execute(q.order_by(W.version_id)).scalars())

    def validation_claim(self, version_id: int, owner: str, lease: float, mine=()) -> dict | None:
        """Take a version's validation for ``lease`` seconds; None if another holds it.
        ``mine``: claims of this owner that are live in this process (not taken again)."""
        with self._tx() as c:
            row = c.execute(
                select(t.validations).where(W.version_id == version_id).with_for_update()
            ).first()
            if row is None or row.state == "done":
                return None
            free = (
                row.claimed_by is None
                or (row.claimed_by == owner and version_id not in mine)
                or (row.claimed_until or 0) < time.time()
            )
            if not free:
                return None
            c.execute(
                t.validations.update()
                .where(W.version_id == version_id)
                .values(claimed_by=owner, claimed_until=time.time() + lease)
            )
            digest = c.execute(
                select(t.versions.c.digest).where(t.versions.c.id == version_id)
            ).scalar_one()
            return {**_row(row), "digest": digest}

    def validation_update(self, version_id: int, **values) -> None:
        for key in JSON_FIELDS:
            if key in values and values[key] is not None:
                values[key] = json.dumps(values[key], default=str)
        if values.get("state") == "done":
            values.update(finished=now(), claimed_by=None, claimed_until=None)
        with self._tx() as c:
            c.execute(t.validations.update().where(W.version_id == version_id).values(**values))

    def validation_of(self, version_id: int) -> dict | None:
        with self._read() as c:
            r = c.execute(select(t.validations).where(W.version_id == version_id)).first()
            return _row(r) if r else None

    def validations_of(self, model: str, numbers) -> dict[int, dict]:
        """The validation rows of some versions of a model, by number."""
        with self._read() as c:
            q = select(t.validations).where(W.model == model, W.number.in_(list(numbers)))
            return {r.number: _row(r) for r in c.execute(q)}
