"""The trust table: types an admin added to the default list, and versions waiting on them.

Plain functions over the registry's database, shared by the HTTP routes and the CLI. Each
change and its audit row share one transaction.
"""

from __future__ import annotations

import json

from . import audit, trust
from .errors import BadRequest


def added(db) -> list[dict]:
    return list(db.query("select type, trusted_by, time from trust order by type"))


def added_names(db) -> list[str]:
    return [r[0] for r in db.execute("select type from trust")]


def listing(db, policy_types=()) -> dict:
    """What ``GET /api/v1/trust`` and ``trust list`` show: default, policy and added."""
    return {
        "default": sorted(trust.DEFAULT_TRUSTED),
        "policy": sorted(policy_types),
        "added": added(db),
    }


def add(db, names, by: str) -> list[str]:
    """Trust ``names`` (refused for gadgets). Returns the names newly added."""
    names = trust.check_addable(names)
    with db.atomic():
        have = set(added_names(db)) | trust.DEFAULT_TRUSTED
        new = [n for n in names if n not in have]
        t = audit.now()
        for name in new:
            db["trust"].insert({"type": name, "trusted_by": by, "time": t})
        if new:
            audit.append(db, by, "trust.add", ",".join(new), {"types": new})
    return new


def remove(db, names, by: str) -> list[str]:
    """Stop trusting added types. Default types cannot be removed here."""
    defaults = sorted(set(names) & trust.DEFAULT_TRUSTED)
    if defaults:
        raise BadRequest(
            f"{', '.join(defaults)} is on the default list and cannot be removed.",
            "The default list ships with Handoff; `jupyter handoff trust list` shows it.",
            code="default_type",
        )
    with db.atomic():
        gone = [n for n in sorted(set(names)) if n in set(added_names(db))]
        for name in gone:
            db.execute("delete from trust where type = ?", [name])
        if gone:
            audit.append(db, by, "trust.remove", ",".join(gone), {"types": gone})
    return gone


def signature(db) -> tuple:
    """Changes whenever the table does: central polls this to notice the CLI's edits."""
    return tuple(db.execute("select count(*), coalesce(max(time), '') from trust").fetchone())


def hold(db, version_id: int, types: list[str], local_verdict: str | None) -> None:
    """Park a version until ``types`` are trusted. Call inside the intake transaction."""
    db["trust_waits"].insert(
        {
            "version_id": version_id,
            "types": json.dumps(types),
            "local_verdict": local_verdict,
            "since": audit.now(),
        },
        replace=True,
    )
    db.execute("update versions set needs_trust = ? where id = ?", [json.dumps(types), version_id])


def releasable(db, allowed) -> list[dict]:
    """Waiting versions (still in needs_trust) whose every type is now trusted."""
    out = []
    for row in db.query(
        "select w.version_id, w.types, w.local_verdict, v.model, v.number from trust_waits w"
        " join versions v on v.id = w.version_id where v.stage = 'needs_trust'"
    ):
        types = json.loads(row["types"])
        if not trust.untrusted(types, allowed):
            out.append({**row, "types": types})
    return out


def release(db, version_id: int) -> None:
    """The version's types are trusted: it no longer waits. Inside the caller's transaction."""
    db.execute("delete from trust_waits where version_id = ?", [version_id])
    db.execute("update versions set needs_trust = null where id = ?", [version_id])


def who_trusted(db, types: list[str]) -> list[str]:
    rows = db.execute(
        f"select distinct trusted_by from trust where type in ({','.join('?' * len(types))})",
        types,
    ).fetchall()
    return sorted(r[0] for r in rows)
