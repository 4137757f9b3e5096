"""Central's public signing keys: which one signs now, and the retired ones a verifier still
needs. Each change writes its ``key.rotate`` audit row in its own transaction."""

from __future__ import annotations

from sqlalchemy import select, update

from ..audit import now
from . import tables as t
from ._util import as_dict
from .base import StoreBase


class SigningKeyStore(StoreBase):
    def signing_key_list(self) -> list[dict]:
        """Every key, the ones in use first, then the retired, the latest retired first."""
        with self._read() as c:
            rows = [as_dict(r) for r in c.execute(select(t.signing_keys))]
        current = sorted((r for r in rows if not r["retired"]), key=lambda r: r["first_used"])
        retired = sorted((r for r in rows if r["retired"]), key=lambda r: r["retired"])
        return current + retired[::-1]

    def _known(self, c, key_id: str, public_b64: str, when: str) -> None:
        ins = self._insert(t.signing_keys).values(
            key_id=key_id, public_key=public_b64, first_used=when, retired=None
        )
        c.execute(ins.on_conflict_do_nothing(index_elements=["key_id"]))

    def signing_key_in_use(self, key_id: str, public_b64: str, actor: str) -> list[str]:
        """At central's start: its key is current; any other key still current is retired
        (a key file replaced by the operator, or a home's key lost), with a ``key.rotate``
        row. Returns the keys retired now."""
        k = t.signing_keys.c
        when = now()
        with self._tx() as c:
            self.audit_lock(c)  # replicas starting together retire in turn
            self._known(c, key_id, public_b64, when)
            c.execute(update(t.signing_keys).where(k.key_id == key_id).values(retired=None))
            old = list(
                c.execute(select(k.key_id).where(k.key_id != key_id, k.retired.is_(None))).scalars()
            )
            if old:
                c.execute(update(t.signing_keys).where(k.key_id.in_(old)).values(retired=when))
                self.audit_append(
                    actor, "key.rotate", "signing_key", {"old": old, "new": key_id, "at": "start"}
                )
            return old

    def signing_key_rotate(self, old: tuple[str, str], new: tuple[str, str], actor: str) -> dict:
        """``dossier key rotate``: ``old`` (key id, public base64) retired, ``new`` current."""
        k = t.signing_keys.c
        when = now()
        with self._tx() as c:
            self._known(c, *old, when)
            c.execute(update(t.signing_keys).where(k.key_id == old[0]).values(retired=when))
            self._known(c, *new, when)
            return self.audit_append(
                actor, "key.rotate", "signing_key", {"old": [old[0]], "new": new[0]}
            )
