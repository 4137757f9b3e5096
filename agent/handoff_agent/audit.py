"""The audit log: a hash chain. Each row's hash covers its content and the previous hash, so
changing, deleting or reordering any row breaks the chain from that row on.

Pure functions; the rows themselves live in the metadata store (``store/audit.py``)."""

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


# -- a source's chain, as central checks it ---------------------------------------------------

ROW_KEYS = (*FIELDS, "prev_hash", "hash")


class ChainError(Exception):
    """A delivered chain segment central cannot accept; ``code`` names why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def is_row(row) -> bool:
    """Every field of an entry, typed as the chain writes them."""
    return (
        isinstance(row, dict)
        and set(ROW_KEYS) <= set(row)
        and type(row["seq"]) is int
        and all(isinstance(row[k], str) for k in ROW_KEYS if k != "seq")
    )


def first_break(rows: list[dict]) -> tuple[str, dict, dict | None] | None:
    """The first entry that breaks a segment, as (how, entry, the entry before): ``hash`` (it
    does not match its hash), ``genesis`` (entry 1 not from the genesis) or ``link`` (not
    linked to the one before: entries missing, moved or replaced). None: it holds. The one
    rule for a delivery (``check_segment``) and an export (``audit verify --file``)."""
    prev = None
    for row in rows:
        if row_hash(row["prev_hash"], row) != row["hash"]:
            return "hash", row, prev
        if prev is None and row["seq"] == 1 and row["prev_hash"] != GENESIS:
            return "genesis", row, prev
        if prev is not None and (row["seq"] != prev["seq"] + 1 or row["prev_hash"] != prev["hash"]):
            return "link", row, prev
        prev = row
    return None


def check_segment(rows) -> dict:
    """Each row's hash matches its content and links to the one before. Returns the head."""
    if not isinstance(rows, list) or not rows:
        raise ChainError("audit_gap", "The delivery carries no audit entries.")
    if not all(is_row(row) for row in rows):
        raise ChainError("audit_invalid", "The delivery's audit entries are malformed.")
    broken = first_break(rows)
    if broken is not None:
        how, row, prev = broken
        if how == "hash":
            raise ChainError(
                "audit_rewritten",
                f"The source's audit entry {row['seq']} does not match its hash: "
                "it was edited after it was written.",
            )
        if how == "genesis":
            raise ChainError(
                "audit_rewritten", "The source's first audit entry is not the genesis."
            )
        raise ChainError(
            "audit_gap",
            f"The source's audit entries {prev['seq']} and {row['seq']} do not link: "
            "entries are missing, moved or replaced.",
        )
    return {"seq": rows[-1]["seq"], "hash": rows[-1]["hash"]}


def check_extends(anchor: dict | None, rows: list[dict]) -> dict:
    """The segment (already ``check_segment``-ed) continues the head central anchored.

    With nothing anchored yet, the first segment is taken as it is (trust on first use,
    from genesis unless the chain is longer than the store sends at first)."""
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
