"""Small helpers the store's modules share."""

from __future__ import annotations

import json

from sqlalchemy import update

from ..audit import canonical, now  # noqa: F401  (pure functions: no SQL in audit.py)


def loads(value):
    return json.loads(value) if value else None


def as_dict(row) -> dict:
    return dict(row._mapping)


def claim(c, table, due, owner: str, until: float) -> list[int]:
    """Lock the rows whose ids ``due`` selects (in its order; on PostgreSQL a row another
    transaction holds is skipped, not waited for) and mark them claimed by ``owner`` until
    ``until``: the outbox's and the notices' one way to take work many agents share."""
    ids = list(c.execute(due.with_for_update(skip_locked=True)).scalars())
    if ids:
        c.execute(
            update(table).where(table.c.id.in_(ids)).values(claimed_by=owner, claimed_until=until)
        )
    return ids
