"""API tokens with roles. Only a token's sha256 is stored; the token is shown once."""

from __future__ import annotations

import hashlib
import json
import secrets

from . import audit
from .errors import BadRequest

ROLES = ("analyst", "reviewer", "admin")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(db, user: str, roles: list[str], actor: str = "cli") -> str:
    bad = [r for r in roles if r not in ROLES]
    if not user or bad or not roles:
        raise BadRequest(
            f"Roles must be among {', '.join(ROLES)} and a user is required.",
            "e.g. jupyter handoff token create --user alice --role reviewer",
        )
    token = secrets.token_urlsafe(32)
    with db.atomic():
        db["tokens"].insert(
            {
                "hash": token_hash(token),
                "user": user,
                "roles": json.dumps(sorted(set(roles))),
                "created": audit.now(),
                "revoked": 0,
            }
        )
        audit.append(db, actor, "token.create", user, {"roles": sorted(set(roles))})
    return token


def lookup(db, token: str) -> dict | None:
    row = db.execute(
        "select user, roles from tokens where hash = ? and revoked = 0", [token_hash(token)]
    ).fetchone()
    return {"user": row[0], "roles": json.loads(row[1])} if row else None


def revoke(db, user: str, actor: str = "cli") -> int:
    with db.atomic():
        n = db.execute("update tokens set revoked = 1 where user = ?", [user]).rowcount
        audit.append(db, actor, "token.revoke", user, {"count": n})
    return n
