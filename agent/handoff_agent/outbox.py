"""The outbox: deliveries waiting for a destination. Rows are written in the transaction of
the verdict (or of a forced forward) and leave only as delivered or dead, never lost."""

from __future__ import annotations

import json
import random
import time
import uuid

from . import audit


def enqueue(db, version_id: int, destination: str, forced_by: str | None = None) -> bool:
    """Call inside a transaction. False when that version already goes to that destination."""
    if db.execute(
        "select 1 from outbox where version_id = ? and destination = ?", [version_id, destination]
    ).fetchone():
        return False
    db["outbox"].insert(
        {
            "destination": destination,
            "version_id": version_id,
            "delivery_id": uuid.uuid4().hex,
            "attempts": 0,
            "next_try": 0.0,
            "state": "pending",
            "forced_by": forced_by,
            "created": audit.now(),
        }
    )
    model, number = db.execute(
        "select model, number from versions where id = ?", [version_id]
    ).fetchone()
    audit.append(
        db,
        forced_by or "agent",
        "forward.queue",
        f"{model}:{number}",
        {"destination": destination, "forced": bool(forced_by)},
    )
    return True


def due(db, now: float, limit: int = 20, ordered: tuple[str, ...] = ()) -> list[dict]:
    """Rows to attempt now. An ``ordered`` destination only ever gets its oldest pending row,
    so its deliveries arrive in the order they were queued (central checks that each one's
    audit entries extend the last; a later body overtaking an earlier one would go back)."""
    only_oldest = ""
    if ordered:
        marks = ", ".join("?" for _ in ordered)
        only_oldest = (
            f" and (o.destination not in ({marks}) or o.id = (select min(p.id) from outbox p"
            "  where p.destination = o.destination and p.state = 'pending'))"
        )
    return list(
        db.query(
            "select o.*, v.model, v.number, v.digest from outbox o join versions v"
            " on v.id = o.version_id where o.state = 'pending' and o.next_try <= ?"
            f"{only_oldest} order by o.next_try, o.id limit ?",
            [now, *ordered, limit],
        )
    )


def acknowledged(db, destination: str) -> dict | None:
    """The newest audit head ``destination`` said it anchored for this agent, or None."""
    for (remote,) in db.execute(
        "select remote from outbox where destination = ? and state = 'delivered'"
        " and remote like '%audit_anchor%' order by id desc limit 20",
        [destination],
    ):
        anchor = json.loads(remote).get("audit_anchor")
        if isinstance(anchor, dict) and type(anchor.get("seq")) is int:
            return anchor
    return None


def set_body(db, row_id: int, digest: str) -> None:
    with db.atomic():
        db.execute("update outbox set body_digest = ? where id = ?", [digest, row_id])


def delivered(db, row: dict, remote: dict) -> None:
    with db.atomic():
        db.execute(
            "update outbox set state = 'delivered', delivered = ?, remote = ?,"
            " attempts = attempts + 1, last_error = null where id = ?",
            [audit.now(), json.dumps(remote), row["id"]],
        )
        audit.append(
            db,
            "agent",
            "forward.delivered",
            f"{row['model']}:{row['number']}",
            {"destination": row["destination"], "delivery": row["delivery_id"], "remote": remote},
        )


def retry(db, row: dict, error: str, delay: float) -> None:
    with db.atomic():
        db.execute(
            "update outbox set attempts = attempts + 1, next_try = ?, last_error = ? where id = ?",
            [time.time() + delay, error, row["id"]],
        )


def dead(db, row: dict, error: str) -> None:
    with db.atomic():
        db.execute(
            "update outbox set state = 'dead', attempts = attempts + 1, last_error = ?"
            " where id = ?",
            [error, row["id"]],
        )
        audit.append(
            db,
            "agent",
            "forward.dead",
            f"{row['model']}:{row['number']}",
            {"destination": row["destination"], "error": error},
        )


def backoff(attempts: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential with full jitter, at least Retry-After, never above the cap."""
    delay = random.uniform(0.5, 1.0) * base * 2 ** min(attempts, 30)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cap)


def for_version(db, version_id: int) -> list[dict]:
    rows = db.query(
        "select destination, delivery_id, state, attempts, last_error, remote, delivered"
        " from outbox where version_id = ? order by id",
        [version_id],
    )
    return [{**r, "remote": json.loads(r["remote"]) if r["remote"] else None} for r in rows]


def summary(db) -> list[dict]:
    return list(
        db.query(
            "select destination, state, count(*) as n, max(last_error) as last_error"
            " from outbox group by destination, state order by destination, state"
        )
    )
