"""Destination ``central``: another agent in the central role, IT's intake.

The body is an envelope tar: ``envelope.json`` (who sends, the local verdict, the bundle's
digest, and the local audit entries from the head central last acknowledged to now) and
``bundle.tar``, the bundle byte for byte, converted to skops first when it is a pickle. The
bundle is checked against its digest before it is packed: a corrupt blob is never forwarded.
Deliveries go out in queue order (``ordered``), and central answers each with the audit head
it now anchors, which the next delivery starts from. Central's stage flows back by polling.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import urllib.request
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from traitlets import Enum, Float, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .. import audit, outbox, runtime
from ..blobs import BlobCorrupt
from ..bundle import read_manifest, write_tar
from ..secrets_check import weak_secret_error
from .api import Delivery, NotReady, Result
from .http import post_signed

CENTRAL_DOWN = (
    "central is not running (no CentralDestination.url, and no central runtime file); "
    "start it with `jupyter handoff serve --role central`"
)
ENVELOPE = "envelope.json"
BUNDLE = "bundle.tar"


def central_home() -> Path:
    return Path(jupyter_data_dir()) / "handoff-central"


def embedded_secret(home: Path | None = None) -> str:
    """The shared secret of the embedded central, created on first use (mode 0600)."""
    path = (home or central_home()) / "intake.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


class ForwardError(Exception):
    """A delivery that cannot be built; it goes to dead-letter with this message."""


def bundle_digest(path: Path) -> str:
    """A verified blob's digest is its name (``blobs/ab/cdef…``)."""
    return path.parent.name + path.name


def corrupt_message(row: dict, digest: str) -> str:
    return (
        f"The stored copy of {row['model']}:{row['number']} (blob {digest[:12]}…) no longer "
        "matches its digest: it is corrupt on disk, so it was not sent. Run `jupyter handoff "
        "fsck` to list damaged blobs, then push the model again."
    )


async def verified(agent, delivery: Delivery, digest: str) -> Path:
    """The blob's path once its bytes are checked against ``digest``; else ForwardError."""
    try:
        return await agent.run_io(agent.store.verify, digest)
    except (BlobCorrupt, OSError):
        row = {"model": delivery.model, "number": delivery.number}
        raise ForwardError(corrupt_message(row, digest)) from None


class CentralDestination(LoggingConfigurable):
    """Deliver versions to a central agent and mirror its stages back."""

    name = "central"
    ordered = True  # see outbox.due: each delivery's audit entries extend the previous one's
    url = Unicode(help="Central agent URL. Empty: the embedded central on this machine.").tag(
        config=True
    )
    secret = Unicode(help="Shared HMAC secret. Empty: the embedded central's secret.").tag(
        config=True
    )
    token = Unicode(help="Token to read stages at central. Empty: the embedded one's.").tag(
        config=True
    )
    format = Enum(["skops", "pickle"], "skops", help="Model format forwarded.").tag(config=True)
    status_interval = Float(2.0, help="Seconds between polls of central for stages.").tag(
        config=True
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # A configured secret was checked by _check_secret; an existing embedded one is
        # checked now, so a weak secret stops the agent at start, not at its first delivery.
        if not self.trait_has_value("secret") and (central_home() / "intake.secret").exists():
            _ = self.secret

    @default("secret")
    def _secret_default(self):
        secret = embedded_secret()
        if problem := weak_secret_error(secret, str(central_home() / "intake.secret")):
            raise TraitError(problem)
        return secret

    @validate("secret")
    def _check_secret(self, proposal):
        where = "c.CentralDestination.secret (the local agent's config)"
        if problem := weak_secret_error(proposal["value"], where):
            raise TraitError(problem)
        return proposal["value"]

    def target(self) -> tuple[str, str]:
        if self.url:
            return self.url.rstrip("/"), self.token
        info = runtime.read("central")
        if not info:
            return "", ""
        return info["url"], self.token or info["token"]

    async def body(self, agent, delivery: Delivery, **kwargs) -> Path:
        if not self.target()[0]:
            raise NotReady(CENTRAL_DOWN)
        bundle_path = await verified(agent, delivery, delivery.digest)
        manifest = read_manifest(bundle_path)
        if manifest.get("serialization") == "pickle" and self.format == "skops":
            converted = await agent.convert_to_skops(delivery.digest)
            bundle_path = await verified(agent, delivery, converted)
        db = agent.registry.db
        ack = await agent.call(outbox.acknowledged, db, self.name)
        rows = await agent.call(audit.rows_since, db, ack["seq"] if ack else None)
        v = delivery.version
        envelope = {
            "format": 1,
            "source": agent.agent_id,
            "local": {
                k: v.get(k)
                for k in (
                    "model",
                    "number",
                    "digest",
                    "pushed_by",
                    "pushed_at",
                    "status",
                    "verdict",
                )
            },
            "bundle_digest": bundle_digest(bundle_path),
            "audit_head": {"seq": rows[-1]["seq"], "hash": rows[-1]["hash"]} if rows else None,
            "audit": rows,
        }
        fd, tmp = tempfile.mkstemp(dir=agent.store.tmp, prefix="envelope-", suffix=".part")
        with open(fd, "wb") as out:
            await agent.run_io(
                write_tar,
                out,
                [
                    (ENVELOPE, json.dumps(envelope, sort_keys=True).encode()),
                    (BUNDLE, bundle_path),
                ],
            )
        return Path(tmp)

    def deliver(self, delivery: Delivery, **kwargs) -> Result:
        url, _ = self.target()
        if not url:
            return Result(False, error=CENTRAL_DOWN)
        return post_signed(
            f"{url}/api/v1/intake",
            delivery.body,
            delivery.delivery_id,
            self.secret,
            "application/x-tar",
        )

    def status(self, remote: dict) -> dict | None:
        """Central's view of a delivered version, or None when it cannot be reached."""
        url, token = self.target()
        if not url or not remote.get("name"):
            return None
        req = urllib.request.Request(
            f"{url}/api/v1/models/{remote['name']}/versions/{int(remote['version'])}",
            headers={"Authorization": f"token {token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None
