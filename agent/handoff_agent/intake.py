"""Central intake: a signed delivery becomes a version in stage ``received``.

The signature (HMAC over id, timestamp and body) is checked as the body streams in, against
every configured secret; the sender whose secret verifies it is who pushed the version (the
envelope's claim is kept only as ``claimed_by``). A delivery id seen before has no second
effect, and the same id with another body is a conflict. Every digest is re-verified, every
tar member must be a plain file, and a pickle is refused unless the policy trusts pickles.
The source's audit entries must extend the head central anchored for it. Nothing is unpickled.
"""

from __future__ import annotations

import json
import math
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from . import audit, bundle, signing
from .disk_room import DiskRoom
from .errors import (
    Conflict,
    InvalidBundle,
    TooLarge,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)
from .forwarding.central import BUNDLE, ENVELOPE
from .ingest import Upload
from .names import validate_name
from .policy import Policy
from .store.blobs import BlobStore, BlobWriter
from .versions import VersionService
from .vocabulary import size_text

MAX_ENVELOPE = 16 << 20  # the envelope carries the source's audit entries since the last ack


class Receipt(Upload):
    """An upload that also feeds the HMAC of every accepted secret."""

    def __init__(self, store, limit: int, macs: list, delivery_id: str, senders: list[str]):
        super().__init__(store, limit)
        self.macs, self.delivery_id, self.senders = macs, delivery_id, senders

    def write(self, chunk, buffer=None) -> None:
        super().write(chunk, buffer)
        if not self.overflow:  # the buffer is refilled only after this returns
            for mac in self.macs:
                mac.update(chunk)


class Store(Protocol):
    def transaction(self): ...
    def delivery_seen(self, delivery_id): ...
    def delivery_claim(self, delivery_id, source, body_digest): ...
    def delivery_bind(self, delivery_id, version_id, lineage): ...
    def delivered_since(self, sender, since): ...
    def audit_lock(self, c): ...
    def version_id(self, name, number): ...
    def source_anchor(self, source): ...
    def source_anchor_add(self, source, head, delivery_id): ...


class Stages(Protocol):
    def enter(self, version_id, stage, by, subject, comment=""): ...


class IntakeManager:
    """``blobs``: where a delivery's bundle is spooled; ``versions``: the version service,
    which numbers it; ``stages``: central's stage manager."""

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        versions: VersionService,
        stages: Stages,
        policy: Policy,
        max_bundle_size: int,
        room: DiskRoom | None = None,
        check_overrides: Callable[[dict | None], None] = lambda pushed: None,
    ):
        self.store, self.blobs, self.versions, self.stages = store, blobs, versions, stages
        self.policy, self.max_bundle_size = policy, max_bundle_size
        self.room = room  # a DiskRoom: a delivery the disk has no room for waits in its outbox
        self.check_overrides = check_overrides  # the gate's: raises for ones it cannot apply

    def claimed(self, headers) -> str:
        """The sender whose secret the delivery's ``X-Handoff-Key`` names, before its body. A
        delivery naming no key, or a key no secret here has, is refused at once: nothing is
        read or stored, so an unsigned sender cannot make central read a body."""
        if not self.policy.signers():
            raise Unauthorized(
                "This central has no intake secret configured.",
                "Set [intake.senders] (or [intake] secrets) in the policy file.",
            )
        if not headers.get(signing.KEY_HEADER):
            raise Unauthorized(  # an older sender drops hints: the way out is in the message
                f"The delivery names no key ({signing.KEY_HEADER}): the sending agent runs an "
                "older Handoff than central; upgrade it (pip install -U jupyter-handoff).",
                "Senders name the key of the secret they sign with.",
                code="bad_signature",
            )
        names = [name for name, _ in self._signers(headers)]
        if not names:
            raise Unauthorized(
                "The delivery is signed with a key this central does not know.",
                "Check that both sides share the same secret.",
                code="bad_signature",
            )
        return names[0]

    def _signers(self, headers) -> list[tuple[str, str]]:
        """(sender, secret) whose key the delivery names: who may have signed it."""
        key = headers.get(signing.KEY_HEADER)
        return [(n, s) for n, s in self.policy.signers() if signing.key_id(s) == key]

    def begin(self, headers, declared: int | None = None) -> Receipt:
        """Where the body goes, once ``claimed`` named its sender."""
        delivery_id = headers.get("X-Handoff-Delivery", "")
        stamp = headers.get("X-Handoff-Timestamp", "")
        signers = self._signers(headers)
        if not signing.ID_RE.fullmatch(delivery_id):
            raise Unauthorized("X-Handoff-Delivery must be 32 hex digits.")
        if not signing.fresh(stamp, self.policy.max_skew):
            raise Unauthorized(
                "The delivery's timestamp is missing, too old or ahead of this clock.",
                f"Deliveries must be signed within {self.policy.max_skew} s of now; check clocks.",
                code="stale_delivery",
            )
        if self.room is not None and declared is not None:
            self.room.check(2 * declared)  # the delivery as received, and its bundle unpacked
        macs = [signing.signer(secret, delivery_id, stamp) for _, secret in signers]
        senders = [name for name, _ in signers]
        return Receipt(self.blobs, self.max_bundle_size, macs, delivery_id, senders)

    def verify(self, receipt: Receipt, signature: str) -> tuple[str, dict, BlobWriter]:
        """Off the event loop: check the signature, unpack and re-verify. Returns the bundle's
        digest, the envelope and the bundle's blob writer (not yet committed: commit it to
        store the bundle, or abort it)."""
        try:
            if receipt.overflow:
                raise InvalidBundle("The delivery is larger than this central accepts.")
            body_digest = receipt.sync()
            which = signing.match_index(signature, receipt.macs)
            if which is None:
                raise Unauthorized(
                    "The delivery's signature does not verify.",
                    "Check that both sides share the same secret.",
                    code="bad_signature",
                )
            envelope, blob = self._unpack(receipt)
        finally:
            receipt.abort()
        try:
            digest = blob.finish()
            if digest != envelope.get("bundle_digest"):
                raise InvalidBundle(
                    "The bundle does not match the envelope's digest.", code="digest_mismatch"
                )
            with blob.reader() as f:
                manifest = bundle.validate(f)
            validate_name(manifest.get("name"))  # the API's rule: every later act needs it
            if manifest["serialization"] != "skops":  # central never unpickles
                raise UnsupportedMediaType(
                    "Central does not accept pickled models; it loads only skops files.",
                    "Forward as skops (the default): the local agent converts pickles.",
                    code="pickle_refused",
                )
            self.check_overrides(manifest.get("gate"))
        except Exception:
            blob.abort()
            raise
        env = {**envelope, "manifest": manifest, "sender": receipt.senders[which]}
        return digest, {**env, "body": body_digest}, blob

    def _unpack(self, receipt: Receipt) -> tuple[dict, BlobWriter]:
        blob = None
        try:
            with receipt.blob.reader() as body, tarfile.open(fileobj=body, mode="r:") as tar:
                members = tar.getmembers()
                names = [m.name for m in members]
                for m in members:
                    bundle.check_member(m, "delivery", "Forward the version again.")
                if names != [ENVELOPE, BUNDLE]:
                    raise InvalidBundle(f"A delivery holds {ENVELOPE} then {BUNDLE}, nothing else.")
                if members[0].size > MAX_ENVELOPE:
                    raise InvalidBundle("envelope.json is too large.")
                envelope = json.loads(tar.extractfile(members[0]).read())
                blob = self.blobs.writer()
                src = tar.extractfile(members[1])
                while chunk := src.read(1 << 20):
                    blob.write(chunk)
        except (tarfile.TarError, ValueError, EOFError) as e:
            if blob is not None:
                blob.abort()
            raise InvalidBundle(f"The delivery is not a valid envelope ({e}).") from None
        except BaseException:
            if blob is not None:
                blob.abort()
            raise
        source = envelope.get("source") if isinstance(envelope, dict) else None
        ok = isinstance(source, str) and 0 < len(source) <= 200
        if not ok or not isinstance(envelope.get("local"), dict):
            blob.abort()
            raise InvalidBundle("envelope.json must name its source and the local version.")
        try:
            audit.check_segment(envelope.get("audit"))
        except audit.ChainError as e:
            blob.abort()
            raise _chain_conflict(envelope.get("source"), e) from None
        return envelope, blob

    def check_rate(self, env: dict, size: int, now: datetime | None = None) -> None:
        """A 429 when the sender delivered ``max_per_hour`` versions, or would pass
        ``max_bytes_per_hour`` bytes with these ``size``, in the last hour. Its Retry-After
        is when enough of them leave the hour, and the local agent's outbox keeps the
        delivery until then (nothing is lost). One delivery larger than the hour's bytes
        would never fit: a 413 the sender's outbox gives up on, with the reason."""
        versions, room = self.policy.max_per_hour, self.policy.max_bytes_per_hour
        if room and size > room:
            raise TooLarge(
                f"This delivery is {size_text(size)}; central takes at most "
                f"{size_text(room)} an hour from one sender.",
                "Central's admin raises [intake] max_bytes_per_hour in its policy.",
            )
        if not (versions or room):
            return
        now = now or datetime.now(UTC)
        hour_ago = (now - timedelta(hours=1)).isoformat(timespec="microseconds")
        rows = self.store.delivered_since(env["sender"], hour_ago)
        over = []  # (when it lifts, what was delivered, the limit) for each limit passed
        if versions and len(rows) >= versions:  # until all but versions - 1 have left
            over.append(
                (rows[len(rows) - versions][0], f"{len(rows)} versions", f"{versions} versions")
            )
        held = total = sum(n for _, n in rows)
        if room and held + size > room:
            for at, n in rows:  # the oldest leave first
                held -= n
                if held + size <= room:
                    over.append((at, size_text(total), size_text(room)))
                    break
        if not over:
            return
        lifts = max(datetime.fromisoformat(at) for at, _, _ in over) + timedelta(hours=1)
        wait = max(1, math.ceil((lifts - now).total_seconds()))
        delivered = " and ".join(what for _, what, _ in over)
        limits = " and ".join(limit for _, _, limit in over)
        raise TooManyRequests(
            f"Sender {env['sender']!r} delivered {delivered} in the last hour; this central "
            f"takes at most {limits} an hour from one sender.",
            f"The delivery waits in the sender's outbox and goes in {wait} s; central's admin "
            "sets [intake] max_versions_per_hour and max_bytes_per_hour in its policy.",
            retry_after=wait,
        )

    def seen(self, delivery_id: str) -> dict | None:
        return self.store.delivery_seen(delivery_id)

    def replay(self, seen: dict, env: dict, delivery_id: str) -> dict:
        """The answer to a delivery id already applied: the first answer again when the body
        is the same, a conflict when it is not."""
        if seen["body_digest"] is not None and seen["body_digest"] != env["body"]:
            raise Conflict(
                f"Delivery {delivery_id} was already received with another body "
                "(another bundle or envelope); a delivery id names exactly one body.",
                "Resend the original body, or send the new one under a new delivery id.",
                code="delivery_conflict",
            )
        out = {k: seen[k] for k in ("name", "version", "stage", "duplicate")}
        return {**out, "audit_anchor": self.anchor(seen["source"])}

    def check_chain(self, env: dict) -> dict:
        """The envelope's audit entries extend this source's anchor; returns their head.
        Called before the bundle is stored, and again inside ``record``'s transaction."""
        try:
            return audit.check_extends(self.anchor(env.get("source")), env["audit"])
        except audit.ChainError as e:
            raise _chain_conflict(env.get("source"), e) from None

    def anchor(self, source) -> dict | None:
        """The newest head of ``source``'s audit chain this central anchored."""
        return self.store.source_anchor(source)

    def record(self, delivery_id: str, digest: str, size: int, env: dict, checks: list[str]):
        """One transaction: delivery id, version (stage received), source's audit head.

        The delivery id is claimed first (a unique row): a delivery that reaches two
        replicas at once is applied by one; the other waits for it, then replays its answer.
        """
        store = self.store
        local = env["local"]
        with store.transaction() as c:
            if not store.delivery_claim(delivery_id, env.get("source"), env["body"]):
                return self.replay(self.seen(delivery_id), env, delivery_id), False
            # Counted again here, after the head lock: deliveries of one sender in parallel
            # (or at two replicas) each saw the hour's count before any was recorded.
            store.audit_lock(c)
            self.check_rate(env, size)
            source = env.get("source")
            head = self.check_chain(env)
            manifest = env["manifest"]
            pushed_by = env["sender"]
            version, created = self.versions.create_version(
                manifest["name"], digest, size, manifest, pushed_by, checks, conclude=False,
                full=False,
            )  # fmt: skip
            vid = version["id"]
            origin = {
                "source": source,
                "version": local.get("number"),
                "delivery": delivery_id,
                "sender": env["sender"],
                "claimed_by": local.get("pushed_by"),
            }
            store.delivery_bind(delivery_id, vid, origin if created else None)
            anchor = self._anchor_head(source, head, delivery_id)
            if created:
                self.stages.enter(
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
                "audit_anchor": anchor,
                "version_id": vid,  # for the caller's transaction; not part of the answer
            }, created

    def _anchor_head(self, source, head: dict, delivery_id: str) -> dict:
        """Anchor ``head`` unless central already holds a later one; return the anchor."""
        current = self.anchor(source)
        if current is not None and current["seq"] >= head["seq"]:
            return current
        self.store.source_anchor_add(source, head, delivery_id)
        return head


def _chain_conflict(source, e: audit.ChainError) -> Conflict | InvalidBundle:
    if e.code == "audit_invalid":
        return InvalidBundle(e.message, "Forward the version again.", code=e.code)
    return Conflict(
        f"Refused: the audit log of source {source} does not extend what this central anchored. "
        + e.message,
        "Investigate that local agent: run `jupyter handoff audit verify` there, and compare "
        "its audit log with this central's sources table.",
        code=e.code,
    )
