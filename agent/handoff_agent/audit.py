"""The audit log: a hash chain. Each row's hash covers its content and the previous hash, so
changing, deleting or reordering any row breaks the chain from that row on."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

GENESIS = "0" * 64
FIELDS = ("seq", "time", "actor", "action", "subject", "payload")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def row_hash(prev_hash: str, row: dict) -> str:
    body = {k: row[k] for k in FIELDS}
    return hashlib.sha256((prev_hash + canonical(body)).encode()).hexdigest()


def append(db, actor: str, action: str, subject: str, payload: dict) -> dict:
    """Append one row. Call inside the transaction of the change it records."""
    last = db.execute("select seq, hash from audit order by seq desc limit 1").fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    row = {
        "seq": seq,
        "time": now(),
        "actor": actor or "unknown",
        "action": action,
        "subject": subject,
        "payload": canonical(payload),
        "prev_hash": prev,
    }
    row["hash"] = row_hash(prev, row)
    db["audit"].insert(row)
    return row


def head(db) -> dict:
    last = db.execute("select seq, hash from audit order by seq desc limit 1").fetchone()
    return {"seq": last[0], "hash": last[1]} if last else {"seq": 0, "hash": GENESIS}


def first_bad(db) -> int | None:
    """The seq of the first row whose chain breaks (edited, deleted or moved), or None."""
    prev, expected = GENESIS, 1
    for row in db.query("select * from audit order by seq"):
        if row["seq"] != expected or row["prev_hash"] != prev or row_hash(prev, row) != row["hash"]:
            return row["seq"]
        prev, expected = row["hash"], expected + 1
    return None


def hash_at(db, seq: int) -> str | None:
    row = db.execute("select hash from audit where seq = ?", [seq]).fetchone()
    return row[0] if row else None
