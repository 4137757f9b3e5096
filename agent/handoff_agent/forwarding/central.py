"""Destination ``central``: another agent in the central role, IT's intake.

The body is an envelope tar: ``envelope.json`` (who sends, the local verdict, the bundle's
digest, the head of the local audit chain) and ``bundle.tar``, the bundle byte for byte,
converted to skops first when it is a pickle. Central's stage flows back by polling.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import urllib.request
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from traitlets import Enum, Float, Unicode, default
from traitlets.config import LoggingConfigurable

from .. import audit, runtime
from ..bundle import read_manifest, write_tar
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


class CentralDestination(LoggingConfigurable):
    """Deliver versions to a central agent and mirror its stages back."""

    name = "central"
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

    @default("secret")
    def _secret_default(self):
        return embedded_secret()

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
        bundle_path = agent.store.path(delivery.digest)
        manifest = read_manifest(bundle_path)
        if manifest.get("serialization") == "pickle" and self.format == "skops":
            bundle_path = agent.store.path(await agent.convert_to_skops(delivery.digest))
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
            "bundle_digest": await agent.run_io(agent.store.hash_path, bundle_path),
            "audit_head": await agent.call(audit.head, agent.registry.db),
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
