"""API tokens with roles. Only a token's sha256 is stored; the token is shown once."""

from __future__ import annotations

import hashlib
import re
import secrets

from .errors import BadRequest

ROLES = ("analyst", "reviewer", "admin", "consumer")
# A consumer calls the model server (and sends feedback) for the models its token names, and
# nothing else: it holds no other role.
USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
# A user name is who signs what: no spaces, look-alikes of another name ("alice "), or paths.


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(store, user: str, roles: list[str], actor: str = "cli", models=None) -> str:
    bad = [r for r in roles if r not in ROLES]
    if not user or bad or not roles:
        raise BadRequest(
            f"Roles must be among {', '.join(ROLES)} and a user is required.",
            "e.g. jupyter handoff token create --user alice --role reviewer",
        )
    if not USER.fullmatch(user):
        raise BadRequest(
            f"{user[:100]!r} is not a user name: letters, digits and . _ @ + -, starting "
            "with a letter or digit, at most 100.",
            "e.g. --user alice or --user alice@example.com",
            code="bad_user",
        )
    consumer = "consumer" in roles
    if consumer and (len(set(roles)) > 1 or not models):
        raise BadRequest(
            "A consumer token names the models it may call, and holds no other role.",
            "e.g. jupyter handoff token create --user app --role consumer --models churn",
        )
    if models and not consumer:
        raise BadRequest("Only a consumer token is scoped to models.", "Add --role consumer.")
    if models:
        from .names import validate_name

        for name in models:
            validate_name(name)
    token = secrets.token_urlsafe(32)
    scope = sorted(set(models)) if consumer else None
    store.token_add(token_hash(token), user, sorted(set(roles)), actor, scope)
    return token


def lookup(store, token: str) -> dict | None:
    return store.token_lookup(token_hash(token))


def revoke(store, user: str, actor: str = "cli", token_id: str = "") -> int:
    """``user``'s tokens, or the one ``token_list`` names ``token_id``."""
    if token_id and not re.fullmatch(r"[0-9a-f]{8,64}", token_id):
        raise BadRequest(
            f"{token_id[:70]!r} is not a token id: its hex digits, as `token list` shows them.",
            "e.g. jupyter handoff token revoke --user alice --id 3f2a9c1e",
        )
    return store.token_revoke(user, actor, token_id)
