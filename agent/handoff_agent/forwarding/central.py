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
import tarfile
import urllib.error
import urllib.request

from traitlets import Enum, Float, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .. import runtime
from ..bundle import read_manifest, write_tar
from ..homes import central_home, embedded_secret
from ..plugins import Delivery, DestinationContext, NotReady, Result
from ..secrets_check import weak_secret_error
from ..store.blobs import BlobError, BlobStore, BlobUnavailable, BlobWriter
from ..trait_checks import positive
from .http import post_signed

CENTRAL_DOWN = (
    "central is not running (no CentralDestination.url, and no central runtime file); "
    "start it with `jupyter handoff serve --role central`"
)
ENVELOPE = "envelope.json"
BUNDLE = "bundle.tar"


def read_envelope(store: BlobStore, digest: str) -> dict | None:
    """The envelope.json of a delivery body, or None when the blob is something else."""
    try:
        with store.open(digest) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            first = tar.next()
            if first is None or first.name != ENVELOPE or first.size > 1 << 20:
                return None
            found = json.loads(tar.extractfile(first).read())
    except (OSError, tarfile.TarError, ValueError, BlobError):
        return None
    return found if isinstance(found, dict) else None


def delivered_artefacts(store: BlobStore, body: str) -> list[str]:
    """What a delivered body leaves on this agent's disk: the body and, inside a delivery
    envelope, the skops bundle converted for it. Central holds them now; kept here they would
    double or triple the room a forwarded version takes."""
    inner = (read_envelope(store, body) or {}).get("bundle_digest")
    return [body, inner] if inner else [body]


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
    timeout = Float(
        60.0,
        help="Seconds a read relayed to central (deployments, predictions, monitoring) waits "
        "for its answer before the caller gets 503 central_down.",
    ).tag(config=True)
    _positive = positive("status_interval", "timeout")

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

    async def body(self, ctx: DestinationContext, delivery: Delivery, **kwargs) -> BlobWriter:
        if not self.target()[0]:
            raise NotReady(CENTRAL_DOWN)
        digest = delivery.digest
        with await ctx.verified_blob(digest) as bundle:
            manifest = read_manifest(bundle)
        if manifest.get("serialization") == "pickle" and self.format == "skops":
            try:
                digest = await ctx.convert_to_skops(digest)
            except BlobUnavailable as e:
                raise NotReady(str(e)) from None
        rows = await ctx.audit_since_ack(self.name)
        v = delivery.version
        envelope = {
            "format": 1,
            "source": ctx.agent_id,
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
            "bundle_digest": digest,
            "audit_head": {"seq": rows[-1]["seq"], "hash": rows[-1]["hash"]} if rows else None,
            "audit": rows,
        }
        out = ctx.blob_writer()  # the loop commits it: the envelope is hashed once
        try:
            with await ctx.verified_blob(digest) as bundle:
                head = json.dumps(envelope, sort_keys=True).encode()
                await ctx.run_io(write_tar, out, [(ENVELOPE, head), (BUNDLE, bundle)])
        except BaseException:
            out.abort()
            raise
        return out

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

    token_refused = None  # why central refuses our token, while it does (status, outbox)

    def status(self, remote: dict, **kwargs) -> dict | None:
        """Central's view of a delivered version, or None when it cannot be reached. A token
        central refuses is said once in the log and kept in ``token_refused``: deliveries go
        on (they are signed with the secret) but no stage would come back, silently."""
        url, token = self.target()
        if not url or not remote.get("name"):
            return None
        req = urllib.request.Request(
            f"{url}/api/v1/models/{remote['name']}/versions/{int(remote['version'])}",
            headers={"Authorization": f"token {token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                self._refused(e.code, _error_message(e))
            return None
        except (OSError, ValueError):
            return None
        self.token_refused = None
        return answer

    def _refused(self, code: int, why: str = "") -> None:
        """``why``: central's own message (whose token expired, and when)."""
        if self.token_refused is None:
            said = f" {why.rstrip('.')}." if why else ""
            self.token_refused = (
                f"Central refuses this agent's token ({code}):{said} Stages and sign-offs no "
                "longer come back to the notebook. Set c.CentralDestination.token to a token "
                "central issued (`jupyter handoff token create` there) and restart the agent."
            )
            self.log.warning("%s", self.token_refused)


def _error_message(e: urllib.error.HTTPError) -> str:
    """The message of central's JSON error, one line and bounded; "" when there is none."""
    try:
        err = json.loads(e.read(4096)).get("error", {})
        message = err.get("message", "") if isinstance(err, dict) else ""
    except (OSError, ValueError, AttributeError):
        return ""
    return " ".join(str(message).split())[:300]
