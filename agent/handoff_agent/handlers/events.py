"""``GET /api/v1/events``: server-sent events, filterable by model and version."""

from __future__ import annotations

import asyncio
import json

from tornado.iostream import StreamClosedError

from ..names import validate_name
from .base import BaseHandler, parse_uint
from .models import int_arg

KEEPALIVE = 15.0


class EventsHandler(BaseHandler):
    async def get(self):
        model = self.get_query_argument("model", None)
        if model is not None:
            validate_name(model)
        version = int_arg(self, "version", None, 1, 2**62)
        after = parse_uint(self.request.headers.get("Last-Event-ID"))
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("X-Accel-Buffering", "no")
        bus = self.agent.events
        queue = bus.subscribe(after)
        try:
            self.write(": connected\n\n")
            await self.flush()
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    self.write(": keepalive\n\n")
                    await self.flush()
                    continue
                if model is not None and event.get("model") != model:
                    continue
                if version is not None and event.get("version") != version:
                    continue
                self.write(f"id: {event['id']}\nevent: {event['type']}\n")
                self.write(f"data: {json.dumps(event, default=str)}\n\n")
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            bus.unsubscribe(queue)
