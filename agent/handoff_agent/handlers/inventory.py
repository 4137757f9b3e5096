"""Routes for risk teams: the inventory, a version's signed dossier, central's public key."""

from __future__ import annotations

import json

from tornado import httpclient

from .. import dossier, keys
from ..errors import Conflict, HandoffError, NotFound
from ..inventory import FILTERS, inventory, parse_filters
from ..names import validate_name
from ..store.blobs import BlobCorrupt
from .base import BaseHandler
from .relay import CENTRAL_DOWN_HINT, CentralDown, token_refused


class InventoryHandler(BaseHandler):
    """Every model with owner, stage, data, sensitive attributes, checks, sign-off and risk
    tags; filtered by tag, stage, owner, dataset and sensitive attribute."""

    async def get(self):
        filters = parse_filters({k: self.get_query_argument(k, None) for k in FILTERS})
        agent = self.agent
        doc = await agent.call(inventory, agent.registry, filters, agent.role == "central")
        self.write_json(doc)


class KeysHandler(BaseHandler):
    """Central's public signing keys, to check dossiers offline: the one it signs with first,
    then the retired ones (``retired``: since when). Public, like a JWKS."""

    public = True

    async def get(self):
        key = getattr(self.agent, "signing_key", None)
        if key is None:
            raise NotFound(
                "Only a central agent signs dossiers, so this agent publishes no key.",
                "Ask the central agent: GET /api/v1/keys there.",
                code="not_central",
            )
        # this replica's key first; then the others the database knows (retired ones still
        # verify the dossiers they signed)
        ours = key.public_key()
        known = await self.agent.call(self.agent.registry.signing_key_list)
        listed = [keys.describe(ours)]
        listed += [
            keys.describe(keys.from_raw_b64(k["public_key"]), k["retired"])
            for k in known
            if k["key_id"] != keys.key_id(ours)
        ]
        self.write_json({"keys": listed})


class DossierHandler(BaseHandler):
    """A version's signed dossier (zip). Central builds it; a local agent fetches it from
    the central its version was delivered to."""

    async def get(self, name: str, number: str):
        validate_name(name)
        agent = self.agent
        if getattr(agent, "signing_key", None) is not None:
            data, fname = await self.build(name, int(number)), dossier.filename(name, int(number))
        else:
            data, fname = await self.from_central(name, int(number))
        self.set_header("Content-Type", "application/zip")
        self.set_header("Content-Disposition", f'attachment; filename="{fname}"')
        self.finish(data)

    async def build(self, name: str, number: int) -> bytes:
        agent = self.agent
        facts = await agent.call(dossier.gather, agent, name, number)
        try:
            return await agent.run_io(
                dossier.build, facts, agent.store.read_bytes, agent.signing_key
            )
        except BlobCorrupt:
            raise HandoffError(
                f"A stored report of {name}:{number} no longer matches its digest.",
                "Run `jupyter handoff fsck` on central.",
                status=409,
                code="blob_corrupt",
            ) from None

    async def from_central(self, name: str, number: int) -> tuple[bytes, str]:
        agent = self.agent
        version = await agent.call(agent.registry.get_version, name, number)
        remote = next(
            (
                f["remote"]
                for f in version.get("forwards") or []
                if f["destination"] == "central" and f["state"] == "delivered" and f["remote"]
            ),
            None,
        )
        central = agent.destinations.get("central")
        if remote is None or central is None:
            raise Conflict(
                f"{name}:{number} has not reached central, and only central signs dossiers.",
                "Wait for the hand-off (`%mlops show NAME:N` shows its forwards), or forward it.",
                code="not_at_central",
            )
        url, token = central.target()
        if not url:
            raise Conflict(
                "Central is not running, so it cannot sign a dossier.", code="central_down"
            )
        # central's answer names its version; checked like any name before it shapes a URL
        rname, rnum = validate_name(str(remote.get("name"))), int(remote["version"])
        try:
            resp = await httpclient.AsyncHTTPClient().fetch(
                f"{url}/api/v1/models/{rname}/versions/{rnum}/dossier",
                headers={"Authorization": f"token {token}"},
                request_timeout=120,
                raise_error=False,
            )
        except (OSError, httpclient.HTTPClientError) as e:  # refused, reset, or timed out
            raise CentralDown(
                f"Central is not answering ({type(e).__name__}).", CENTRAL_DOWN_HINT
            ) from None
        if resp.code != 200:
            try:
                err = json.loads(resp.body)["error"]
            except (ValueError, KeyError, TypeError):
                err = {"code": "central_error", "message": f"central answered {resp.code}"}
            if resp.code == 401:
                raise token_refused(err)
            raise HandoffError(
                f"Central could not make the dossier: {err.get('message')}",
                err.get("hint", ""),
                status=409 if resp.code >= 500 or resp.code == 599 else resp.code,
                code=err.get("code", "central_error"),
            )
        return resp.body, dossier.filename(rname, rnum)
