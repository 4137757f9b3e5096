"""The review queue: what waits for sign-offs at central, across models (a reviewer's) or
for one model (an analyst's, which a local agent relays). Thin over ``StageManager.queue``."""

from __future__ import annotations

from ..errors import BadRequest
from ..names import validate_name
from .base import page_args
from .relay import FromCentral


class ReviewsHandler(FromCentral):
    """The versions waiting for sign-offs, oldest first; ``mine=true``: those the caller may
    sign now. Each says what is missing and what would refuse an approval now. A page at a
    time: ``next`` is the ``after`` of the next page."""

    async def get(self):
        stages = self.central()
        mine = self.get_query_argument("mine", "false")
        if mine not in ("true", "false"):
            raise BadRequest("mine is true or false.", "e.g. ?mine=true")
        who = self.identity if mine == "true" else None
        limit, after = page_args(self, 500)
        self.write_json(await self.agent.read(stages.page, who, limit, None, after))


class ModelReviewsHandler(FromCentral):
    """What one model's versions wait for at central: the analyst's side of the queue. A
    local agent answers with its central's reply, so the notebook needs no central token."""

    async def get(self, name: str):
        validate_name(name)
        if await self.relay(name, "reviews"):
            return
        stages = self.central()
        limit, after = page_args(self, 500)
        await self.known_model(name)
        page = await self.agent.read(stages.page, None, limit, (name, None), after)
        self.write_json({"model": name, **page})
