"""Small helpers the store's modules share."""

from __future__ import annotations

import json

from ..audit import canonical, now  # noqa: F401  (pure functions: no SQL in audit.py)


def loads(value):
    return json.loads(value) if value else None


def as_dict(row) -> dict:
    return dict(row._mapping)
