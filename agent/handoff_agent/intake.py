"""Central intake: a signed delivery becomes a version in stage ``received``.

The signature (HMAC over id, timestamp and body) is checked as the body streams in, against
every configured secret. A delivery id seen before has no second effect. Every digest is
re-verified, and a pickle is refused unless the policy trusts pickles. Nothing is unpickled.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from . import audit, bundle, signing
from .errors import Conflict, InvalidBundle, Unauthorized, UnsupportedMediaType
from .forwarding.central import BUNDLE, ENVELOPE
from .ingest import Upload
from .policy import Policy

MAX_ENVELOPE = 1 << 20


class Receipt(Upload):
    """An upload that also feeds the HMAC of every accepted secret."""

    def __init__(self, store, limit: int, macs: list, delivery_id: str):
        super().__init__(store, limit)
        self.macs, self.delivery_id = macs, delivery_id

    def write(self, chunk: bytes) -> None:
        super().write(chunk)
        if not self.overflow:
            for mac in self.macs:
                mac.update(chunk)


class IntakeManager:
    def __init__(self, agent, policy: Policy):
        self.agent = agent
        self.policy = policy

    def begin(self, headers) -> Receipt:
        delivery_id = headers.get("X-Handoff-Delivery", "")
        stamp = headers.get("X-Handoff-Timestamp", "")
        if not self.policy.secrets:
            raise Unauthorized(
                "This central has no intake secret configured.",
                "Set [intake] secrets in the policy file.",
            )
        if not signing.ID_RE.fullmatch(delivery_id):
            raise Unauthorized("X-Handoff-Delivery must be 32 hex digits.")
        if not signing.fresh(stamp, self.policy.max_skew):
            raise Unauthorized(
                "The delivery's timestamp is missing, too old or ahead of this clock.",
                f"Deliveries must be signed within {self.policy.max_skew} s of now; check clocks.",
                code="stale_delivery",
            )
        macs = [signing.signer(s, delivery_id, stamp) for s in self.policy.secrets]
        return Receipt(self.agent.store, self.agent.max_bundle_size, macs, delivery_id)

    def verify(self, receipt: Receipt, signature: str) -> tuple[str, dict, Path]:
        """Off the event loop: check the signature, unpack and re-verify. Returns the bundle's
        digest, the envelope and the bundle's temp path (not yet a blob)."""
        try:
            if receipt.overflow:
                raise InvalidBundle("The delivery is larger than this central accepts.")
            receipt.sync()
            if not signing.matches(signature, receipt.macs):
                raise Unauthorized(
                    "The delivery's signature does not verify.",
                    "Check that both sides share the same secret.",
                    code="bad_signature",
                )
            envelope, path = self._unpack(receipt.temp)
        finally:
            receipt.abort()
        digest = self.agent.store.hash_path(path)
        if digest != envelope.get("bundle_digest"):
            path.unlink(missing_ok=True)
            raise InvalidBundle(
                "The bundle does not match the envelope's digest.", code="digest_mismatch"
            )
        try:
            manifest = bundle.validate(path)
            if manifest["serialization"] != "skops":  # central never unpickles
                raise UnsupportedMediaType(
                    "Central does not accept pickled models; it loads only skops files.",
                    "Forward as skops (the default): the local agent converts pickles.",
                    code="pickle_refused",
                )
        except Exception:
            path.unlink(missing_ok=True)
            raise
        return digest, {**envelope, "manifest": manifest}, path

    def _unpack(self, temp: Path) -> tuple[dict, Path]:
        try:
            with tarfile.open(temp, mode="r:") as tar:
                members = tar.getmembers()
                names = [m.name for m in members]
                if names != [ENVELOPE, BUNDLE] or not all(m.isreg() for m in members):
                    raise InvalidBundle(f"A delivery holds {ENVELOPE} then {BUNDLE}, nothing else.")
                if members[0].size > MAX_ENVELOPE:
                    raise InvalidBundle("envelope.json is too large.")
                envelope = json.loads(tar.extractfile(members[0]).read())
                fd, out = self.agent.store.new_temp()
                with open(fd, "wb") as f:
                    src = tar.extractfile(members[1])
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
        except (tarfile.TarError, ValueError, EOFError) as e:
            raise InvalidBundle(f"The delivery is not a valid envelope ({e}).") from None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("local"), dict):
            Path(out).unlink(missing_ok=True)
            raise InvalidBundle("envelope.json must describe the local version.")
        return envelope, Path(out)

    def seen(self, delivery_id: str) -> dict | None:
        row = self.agent.registry.db.execute(
            "select v.model, v.number, v.stage from deliveries d join versions v"
            " on v.id = d.version_id where d.delivery_id = ?",
            [delivery_id],
        ).fetchone()
        return (
            {"name": row[0], "version": row[1], "stage": row[2], "duplicate": True} if row else None
        )

    def record(self, delivery_id: str, digest: str, size: int, env: dict, checks: list[str]):
        """One transaction: version (stage received), delivery id, source's audit head."""
        db = self.agent.registry.db
        local = env["local"]
        with db.atomic():
            if (again := self.seen(delivery_id)) is not None:
                return again, False
            manifest = env["manifest"]
            pushed_by = str(local.get("pushed_by") or "unknown")
            version, created = self.agent.registry.create_version(
                manifest["name"], digest, size, manifest, pushed_by, checks
            )
            vid = self.agent.registry.version_id(version["model"], version["number"])
            db.execute(
                "update versions set origin = ? where id = ?",
                [
                    audit.canonical(
                        {
                            "source": env.get("source"),
                            "version": local.get("number"),
                            "delivery": delivery_id,
                        }
                    ),
                    vid,
                ],
            )
            db["deliveries"].insert(
                {
                    "delivery_id": delivery_id,
                    "source": env.get("source"),
                    "version_id": vid,
                    "received": audit.now(),
                }
            )
            head = env.get("audit_head") or {}
            self._record_head(db, env.get("source"), head, delivery_id)
            if created:
                self.agent.stages.enter(
                    vid,
                    "received",
                    "central",
                    f"{version['model']}:{version['number']}",
                    f"from {env.get('source')}",
                )
            return {
                "name": version["model"],
                "version": version["number"],
                "stage": "received" if created else version.get("stage"),
            }, created

    def _record_head(self, db, source, head: dict, delivery_id: str) -> None:
        if not isinstance(head.get("seq"), int) or not isinstance(head.get("hash"), str):
            return
        known = db.execute(
            "select hash from sources where source = ? and seq = ?", [source, head["seq"]]
        ).fetchone()
        if known and known[0] != head["hash"]:
            raise Conflict(
                f"Source {source}'s audit chain changed at entry {head['seq']}: its history "
                "was rewritten since an earlier delivery.",
                "Investigate the local agent; run `jupyter handoff audit verify` there.",
                code="audit_rewritten",
            )
        db["sources"].insert(
            {
                "source": source,
                "seq": head["seq"],
                "hash": head["hash"],
                "delivery_id": delivery_id,
                "time": audit.now(),
            }
        )
