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


# -- lifecycle: a run that ends without agent.stop leaves a visible gap ----------------------


def lifecycle_start(db, payload: dict) -> list[dict]:
    """Record ``agent.start``, preceded by ``agent.gap`` when the last run never stopped."""
    with db.atomic():
        written = []
        last = db.execute(
            "select seq, time, action from audit where action in ('agent.start', 'agent.stop')"
            " order by seq desc limit 1"
        ).fetchone()
        if last and last[2] == "agent.start":
            tail = head(db)
            written.append(
                append(
                    db,
                    "agent",
                    "agent.gap",
                    "agent",
                    {
                        "started": {"seq": last[0], "time": last[1]},
                        "last_entry": tail["seq"],
                        "reason": "the previous run ended without agent.stop (killed or crashed)",
                    },
                )
            )
        written.append(append(db, "agent", "agent.start", "agent", payload))
        return written


def lifecycle_stop(db, payload: dict) -> dict:
    with db.atomic():
        return append(db, "agent", "agent.stop", "agent", payload)


# -- a source's chain, as central checks it ---------------------------------------------------

ROW_KEYS = (*FIELDS, "prev_hash", "hash")
MAX_ROWS_FIRST = 10_000  # rows sent when central has acknowledged nothing yet


class ChainError(Exception):
    """A delivered chain segment central cannot accept; ``code`` names why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def rows_since(db, seq: int | None) -> list[dict]:
    """The rows to send to a central that acknowledged entry ``seq`` (that row included, so
    central can compare it), or the last ``MAX_ROWS_FIRST`` when nothing is acknowledged."""
    if seq:
        return list(db.query("select * from audit where seq >= ? order by seq", [seq]))
    rows = db.query("select * from audit order by seq desc limit ?", [MAX_ROWS_FIRST])
    return sorted(rows, key=lambda r: r["seq"])


def check_segment(rows) -> dict:
    """Each row's hash matches its content and links to the one before. Returns the head."""
    if not isinstance(rows, list) or not rows:
        raise ChainError("audit_gap", "The delivery carries no audit entries.")
    prev = None
    for row in rows:
        ok = (
            isinstance(row, dict)
            and set(ROW_KEYS) <= set(row)
            and type(row["seq"]) is int
            and all(isinstance(row[k], str) for k in ROW_KEYS if k != "seq")
        )
        if not ok:
            raise ChainError("audit_invalid", "The delivery's audit entries are malformed.")
        if row_hash(row["prev_hash"], row) != row["hash"]:
            raise ChainError(
                "audit_rewritten",
                f"The source's audit entry {row['seq']} does not match its hash: "
                "it was edited after it was written.",
            )
        if prev is not None and (row["seq"] != prev["seq"] + 1 or row["prev_hash"] != prev["hash"]):
            raise ChainError(
                "audit_gap",
                f"The source's audit entries {prev['seq']} and {row['seq']} do not link: "
                "entries are missing, moved or replaced.",
            )
        prev = row
    if rows[0]["seq"] == 1 and rows[0]["prev_hash"] != GENESIS:
        raise ChainError("audit_rewritten", "The source's first audit entry is not the genesis.")
    return {"seq": prev["seq"], "hash": prev["hash"]}


def check_extends(anchor: dict | None, rows: list[dict]) -> dict:
    """The segment (already ``check_segment``-ed) continues the head central anchored.

    With nothing anchored yet, the first segment is taken as it is (trust on first use,
    from genesis unless the chain is longer than ``MAX_ROWS_FIRST``)."""
    first, last = rows[0], rows[-1]
    new = {"seq": last["seq"], "hash": last["hash"]}
    if anchor is None:
        return new
    seq = anchor["seq"]
    if last["seq"] < seq:
        raise ChainError(
            "audit_backwards",
            f"The source's audit log now ends at entry {last['seq']}, behind entry {seq} "
            "this central already anchored: its history was cut or rolled back.",
        )
    if first["seq"] > seq + 1:
        raise ChainError(
            "audit_gap",
            f"The delivery's audit entries start at {first['seq']}, but this central "
            f"anchored entry {seq}: entries {seq + 1} to {first['seq'] - 1} are missing.",
        )
    if first["seq"] == seq + 1:
        linked = first["prev_hash"] == anchor["hash"]
    else:
        linked = rows[seq - first["seq"]]["hash"] == anchor["hash"]
    if not linked:
        raise ChainError(
            "audit_rewritten",
            f"The source's audit entry {seq} differs from the one this central anchored: "
            "its history was rewritten since an earlier delivery.",
        )
    return new
