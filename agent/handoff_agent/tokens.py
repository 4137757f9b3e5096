"""API tokens with roles. Only a token's sha256 is stored; the token is shown once."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta

from .errors import BadRequest, Unauthorized
from .vocabulary import period_seconds, when_text

ROLES = ("analyst", "reviewer", "admin", "consumer")
# A consumer calls the model server (and sends feedback) for the models its token names, and
# nothing else: it holds no other role.
USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
# A user name is who signs what: no spaces, look-alikes of another name ("alice "), or paths.


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


MAX_EXPIRY = 36_500 * 86_400  # a century: longer is a typo (and past what a date holds)


def expiry_seconds(text: str) -> float:
    """``--expires`` (or ``[tokens] max_age``) in seconds: a period such as 30m, 24h, 90d."""
    seconds = period_seconds(text, unit=True)
    if seconds is None or not 0 < seconds <= MAX_EXPIRY:
        raise BadRequest(
            f"Expiry {str(text)[:40]!r} is not a period with its unit, up to a century: "
            "write e.g. --expires 30m, 24h or 90d.",
            "e.g. jupyter handoff token create --user alice --role reviewer --expires 90d",
            code="bad_expires",
        )
    return seconds


def _expires(expires: str | None, max_age: str) -> str | None:
    """When a new token stops working (ISO 8601, UTC), or None: never. Central's policy
    ``[tokens] max_age`` is the default and the longest allowed."""
    seconds = expiry_seconds(expires) if expires else None
    if max_age:
        longest = expiry_seconds(max_age)
        if seconds is None:
            seconds = longest
        elif seconds > longest:
            raise BadRequest(
                f"An expiry of {expires[:40]} is longer than the policy's [tokens] max_age of "
                f"{max_age}.",
                f"Ask for --expires {max_age} or less, or leave it out to get {max_age}.",
                code="expires_too_long",
            )
    if seconds is None:
        return None
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def create(store, user: str, roles: list[str], actor: str = "cli", models=None) -> str:
    """A new token that never expires, returned once (``issue`` says more)."""
    return issue(store, user, roles, actor, models)["token"]


def issue(
    store,
    user: str,
    roles: list[str],
    actor: str = "cli",
    models=None,
    expires: str | None = None,
    max_age: str = "",
) -> dict:
    """A new token, shown once, and when it expires (None: never). ``expires``: a period
    (90d); ``max_age``: central's policy ``[tokens] max_age`` (default and longest)."""
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
    until = _expires(expires, max_age)
    token = secrets.token_urlsafe(32)
    scope = sorted(set(models)) if consumer else None
    store.token_add(token_hash(token), user, sorted(set(roles)), actor, scope, until)
    return {"token": token, "expires": until}


def lookup(store, hashed: str, max_age: str = "") -> dict | None:
    """The identity of the token whose ``token_hash`` is ``hashed`` (the caller hashes the
    token once, and notes its use with the same hash); None for none in force. Its
    ``expires`` is the one in force now (``expiry``), and an expired one is refused here."""
    found = store.token_lookup(hashed)
    if found is None:
        return None
    created = found.pop("created", None)
    until, by_policy = expiry(found.pop("expires", None), created, max_age)
    if until:
        found["expires"] = until
    if by_policy:
        found["max_age"] = max_age  # the 401 says why a token made "never" to expire ended
    return in_force(found, max_age)


def expiry(expires: str | None, created: str | None, max_age: str) -> tuple[str | None, bool]:
    """When a token stops working, worked out at each check: its own expiry, or its creation
    plus central's ``[tokens] max_age`` when that comes first (or it has none), so a policy
    set or tightened later binds the tokens made before it. Second: whether the policy's
    bound is the one in force. ``max_age`` "": no policy, the token's own expiry."""
    if not max_age or not created:
        return expires, False
    made = datetime.fromisoformat(created)
    made = made.replace(tzinfo=UTC) if made.tzinfo is None else made  # stored times are UTC
    bound = made.astimezone(UTC) + timedelta(seconds=expiry_seconds(max_age))
    if expires and datetime.fromisoformat(expires) <= bound:
        return expires, False
    return bound.isoformat(timespec="microseconds"), True


def in_force(identity: dict, max_age: str = "") -> dict:
    """``identity``, unless its token expired: then a 401 saying whose and when (and, when
    central's ``[tokens] max_age`` ended it, that), and how to get another (a cached
    identity is checked again with this). ``max_age``: the policy's, "" for none, so the
    hint names a bound only when there is one."""
    expires = identity.get("expires")
    if expires and datetime.fromisoformat(expires) <= datetime.now(UTC):
        user, roles = identity["user"], identity["roles"]
        again = " ".join(f"--role {r}" for r in roles)
        if identity.get("models"):
            again += f" --models {','.join(identity['models'])}"
        why = ""
        if identity.get("max_age"):
            why = f": central's [tokens] max_age of {identity['max_age']} counts from its creation"
        within = f", within central's [tokens] max_age of {max_age}" if max_age else ""
        raise Unauthorized(
            f"The token of {user} expired at {when_text(expires)}{why}.",
            f"Ask your admin for a new token (jupyter handoff token create --user {user} "
            f"{again} --expires PERIOD{within}).",
            code="token_expired",
        )
    return identity


class LastUse:
    """Which tokens are due to have their use written: each at most once per ``interval``
    seconds in this process. Writing on every request would queue each read behind the
    store's writer (on SQLite, its one write lock) for a column people read in days; a
    minute stale is exact enough to tell a token nobody uses."""

    def __init__(self, interval: float = 60.0):
        self.interval = interval
        self._written: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, hashed: str) -> bool:
        """True, once per interval for ``hashed``: the caller then writes the use."""
        t = time.monotonic()
        with self._lock:
            last = self._written.get(hashed)
            if last is not None and t - last < self.interval:
                return False
            if len(self._written) > 10_000:  # bounded: forgetting only writes once more
                self._written.clear()
            self._written[hashed] = t
            return True


def note_use(store, hashed: str) -> None:
    """Record that the token with hash ``hashed`` was used now (``LastUse`` says when)."""
    from .audit import now

    store.token_used(hashed, now())


def revoke(store, user: str, actor: str = "cli", token_id: str = "") -> int:
    """``user``'s tokens, or the one ``token_list`` names ``token_id``."""
    if token_id and not re.fullmatch(r"[0-9a-f]{8,64}", token_id):
        raise BadRequest(
            f"{token_id[:70]!r} is not a token id: its hex digits, as `token list` shows them.",
            "e.g. jupyter handoff token revoke --user alice --id 3f2a9c1e",
        )
    return store.token_revoke(user, actor, token_id)
