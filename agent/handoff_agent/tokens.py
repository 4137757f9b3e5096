"""API tokens with roles. Only a token's sha256 is stored; the token is shown once."""

from __future__ import annotations

import hashlib
import secrets

from .errors import BadRequest

ROLES = ("analyst", "reviewer", "admin")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(store, user: str, roles: list[str], actor: str = "cli") -> str:
    bad = [r for r in roles if r not in ROLES]
    if not user or bad or not roles:
        raise BadRequest(
            f"Roles must be among {', '.join(ROLES)} and a user is required.",
            "e.g. jupyter handoff token create --user alice --role reviewer",
        )
    token = secrets.token_urlsafe(32)
    store.token_add(token_hash(token), user, sorted(set(roles)), actor)
    return token


def lookup(store, token: str) -> dict | None:
    return store.token_lookup(token_hash(token))


def revoke(store, user: str, actor: str = "cli") -> int:
    return store.token_revoke(user, actor)
