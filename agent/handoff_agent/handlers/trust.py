"""``/api/v1/trust``: the types this agent loads. Anyone may read; admins add."""

from __future__ import annotations

from .. import trust_admin
from ..errors import BadRequest
from .base import ANY_ROLE, BaseHandler


class TrustHandler(BaseHandler):
    roles = {"GET": ANY_ROLE, "POST": ("admin",)}
    does = "change the trust list"

    async def get(self):
        agent = self.agent
        policy = agent.policy.trusted_types if agent.policy else []
        self.write_json(await agent.call(trust_admin.listing, agent.registry, policy))

    async def post(self):
        types = self.json_body().get("types")
        if not isinstance(types, list) or len(types) > 100:
            raise BadRequest(
                "types must be a list of exact type names (at most 100).",
                'e.g. {"types": ["my_pkg.MyEstimator"]}',
            )
        agent = self.agent
        added = await agent.call(trust_admin.add, agent.registry, types, self.identity["user"])
        released = await agent.trust_flow.trust_changed()
        self.write_json({"added": added, "released": released}, 201)
