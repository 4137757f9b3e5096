"""Who may do what: API tokens (only their sha256) and the trust table with the versions
waiting on it. Each change and its audit row share one transaction."""

from __future__ import annotations

import json

from sqlalchemy import delete, func, select, update

from ..errors import NotFound
from . import tables as t
from ._util import as_dict, now
from .base import StoreBase

K = t.tokens.c
T = t.trust.c
W = t.trust_waits.c
V = t.versions.c


TOKEN_ID = 8  # hex digits of a token's hash that name it in lists and revokes


class AccessStore(StoreBase):
    def token_add(
        self,
        token_hash: str,
        user: str,
        roles: list[str],
        actor: str,
        models=None,
        expires: str | None = None,
    ) -> None:
        """``models``: the models a consumer token may call (None: no model scope);
        ``expires``: when it stops working (UTC ISO 8601; None: never)."""
        with self._tx() as c:
            c.execute(
                t.tokens.insert().values(
                    hash=token_hash,
                    user=user,
                    roles=json.dumps(roles),
                    created=now(),
                    revoked=0,
                    models=None if models is None else json.dumps(sorted(models)),
                    expires=expires,
                )
            )
            payload = {
                "roles": roles,
                **({"models": sorted(models)} if models else {}),
                "expires": expires,
            }
            self.audit_append(actor, "token.create", user, payload)

    def token_lookup(self, token_hash: str) -> dict | None:
        """The identity of a token not revoked, with its ``expires`` when it has one and when
        it was ``created`` (the caller, ``tokens.lookup``, works out the expiry in force under
        central's policy and refuses it once past)."""
        with self._read() as c:
            row = c.execute(
                select(K.user, K.roles, K.models, K.expires, K.created).where(
                    K.hash == token_hash, K.revoked == 0
                )
            ).first()
        if row is None:
            return None
        found = {"user": row[0], "roles": json.loads(row[1]), "created": row[4]}
        if row[2] is not None:
            found["models"] = json.loads(row[2])
        if row[3] is not None:
            found["expires"] = row[3]
        return found

    def token_used(self, token_hash: str, when: str) -> None:
        """Note that the token was used at ``when``. Bookkeeping, not a change anyone made:
        no audit row (one per use would swamp the log), and never moved backwards."""
        with self._tx() as c:
            c.execute(
                update(t.tokens)
                .where(K.hash == token_hash, (K.last_used.is_(None)) | (K.last_used < when))
                .values(last_used=when)
            )

    def token_revoke(self, user: str, actor: str, token_id: str = "") -> int:
        """Revoke ``user``'s tokens, or only the one whose id (``tokens``) is ``token_id``."""
        with self._tx() as c:
            # names count case-insensitively (README), so `--user eve` revokes Eve's tokens
            q = update(t.tokens).where(func.lower(K.user) == user.lower(), K.revoked == 0)
            if token_id:
                q = q.where(K.hash.startswith(token_id))
            n = c.execute(q.values(revoked=1)).rowcount
            if n == 0:  # said, not a "Revoked 0" an admin takes for done
                which = f"with id {token_id} " if token_id else ""
                raise NotFound(
                    f"No token of {user} {which}is in force; nothing was revoked.",
                    "`jupyter handoff token list` shows the tokens in force, with their ids.",
                    code="no_token",
                )
            payload = {"count": n, **({"id": token_id} if token_id else {})}
            self.audit_append(actor, "token.revoke", user, payload)
            return n

    def tokens(self, revoked: bool = False) -> list[dict]:
        """The tokens not revoked (``revoked``: those too): user, roles, models, created,
        expires, last used, revoked, and an id (the first digits of the stored hash: naming
        one, never enough to use it)."""
        q = select(K.hash, K.user, K.roles, K.models, K.created, K.expires, K.last_used, K.revoked)
        if not revoked:
            q = q.where(K.revoked == 0)
        with self._read() as c:
            rows = c.execute(q.order_by(K.user, K.created)).all()
        return [
            {
                "id": r.hash[:TOKEN_ID],
                "user": r.user,
                "roles": json.loads(r.roles),
                "models": json.loads(r.models) if r.models else None,
                "created": r.created,
                "expires": r.expires,
                "last_used": r.last_used,
                "revoked": bool(r.revoked),
            }
            for r in rows
        ]

    # -- trust ----------------------------------------------------------------------------

    def trust_added(self) -> list[dict]:
        with self._read() as c:
            return [
                as_dict(r) for r in c.execute(select(T.type, T.trusted_by, T.time).order_by(T.type))
            ]

    def trust_names(self) -> list[str]:
        with self._read() as c:
            return list(c.execute(select(T.type)).scalars())

    def trust_add(self, names: list[str], by: str, defaults=frozenset()) -> list[str]:
        """Add the names not yet trusted (``defaults`` count as trusted). Returns them."""
        with self._tx() as c:
            have = set(c.execute(select(T.type)).scalars()) | set(defaults)
            new = [n for n in names if n not in have]
            t_ = now()
            for name in new:
                c.execute(
                    self._insert(t.trust)
                    .values(type=name, trusted_by=by, time=t_)
                    .on_conflict_do_nothing(index_elements=["type"])
                )
            if new:
                self.audit_append(by, "trust.add", ",".join(new), {"types": new})
            return new

    def trust_remove(self, names, by: str) -> list[str]:
        with self._tx() as c:
            have = set(c.execute(select(T.type)).scalars())
            gone = [n for n in sorted(set(names)) if n in have]
            if gone:
                c.execute(delete(t.trust).where(T.type.in_(gone)))
                self.audit_append(by, "trust.remove", ",".join(gone), {"types": gone})
            return gone

    def trust_signature(self) -> tuple:
        """Changes whenever the table does: central polls this to notice the CLI's edits."""
        with self._read() as c:
            return tuple(c.execute(select(func.count(), func.coalesce(func.max(T.time), ""))).one())

    def trust_hold(self, version_id: int, types: list[str], local_verdict: str | None) -> None:
        """Park a version until ``types`` are trusted."""
        with self._tx() as c:
            stmt = self._insert(t.trust_waits).values(
                version_id=version_id,
                types=json.dumps(types),
                local_verdict=local_verdict,
                since=now(),
            )
            c.execute(
                stmt.on_conflict_do_update(
                    index_elements=["version_id"],
                    set_={
                        "types": stmt.excluded.types,
                        "local_verdict": stmt.excluded.local_verdict,
                        "since": stmt.excluded.since,
                    },
                )
            )
            c.execute(
                update(t.versions).where(V.id == version_id).values(needs_trust=json.dumps(types))
            )

    def trust_waiting(self) -> list[dict]:
        """Versions held in needs_trust, with the types they wait on."""
        q = (
            select(W.version_id, W.types, W.local_verdict, V.model, V.number)
            .join(t.versions, V.id == W.version_id)
            .where(V.stage == "needs_trust")
        )
        with self._read() as c:
            return [{**as_dict(r), "types": json.loads(r.types)} for r in c.execute(q)]

    def trust_waits_of(self, version_id: int) -> list[str] | None:
        """The types the version waits on an admin to trust; None when it waits for none."""
        with self._read() as c:
            raw = c.execute(select(V.needs_trust).where(V.id == version_id)).scalar()
        return json.loads(raw) if raw else None

    def trust_release(self, version_id: int) -> bool:
        """The version no longer waits. False when another process released it first."""
        with self._tx() as c:
            n = c.execute(delete(t.trust_waits).where(W.version_id == version_id)).rowcount
            c.execute(update(t.versions).where(V.id == version_id).values(needs_trust=None))
            return n == 1

    def who_trusted(self, types: list[str]) -> list[str]:
        with self._read() as c:
            return sorted(
                c.execute(select(T.trusted_by).where(T.type.in_(types)).distinct()).scalars()
            )
