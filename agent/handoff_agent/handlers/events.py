"""Server-sent events: ``GET /api/v1/events`` (this agent's bus, filterable by model and
version) and ``GET /api/v1/models/{name}/deployment/events`` (one model's deployment events:
central's bus at central, central's stream relayed by a local agent)."""

from __future__ import annotations

import asyncio
import contextlib
import json

from tornado.iostream import StreamClosedError

from .. import central_events
from ..names import validate_name
from ..vocabulary import DEPLOY_EVENTS
from .base import BaseHandler, int_arg, parse_uint
from .relay import FromCentral

KEEPALIVE = 15.0
STREAM_ENDS = (StreamClosedError, asyncio.CancelledError)  # the client left; the agent stops


class EventStreamHandler(BaseHandler):
    """Writing an SSE stream; a client that went away ends it (StreamClosedError), and so
    does the agent stopping (its task cancelled): quietly, not as an error response after
    the headers went out, an ERROR line in the log at every stop with a panel open."""

    def last_event_id(self) -> int | None:
        return parse_uint(self.request.headers.get("Last-Event-ID"))

    async def open_stream(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("X-Accel-Buffering", "no")
        self.write(": connected\n\n")
        await self.flush()

    async def send(self, kind: str, event: dict) -> None:
        if "id" in event:
            self.write(f"id: {event['id']}\n")
        self.write(f"event: {kind}\ndata: {json.dumps(event, default=str)}\n\n")
        await self.flush()

    async def keepalive(self) -> None:
        self.write(": keepalive\n\n")
        await self.flush()

    async def stream_bus(self, keep) -> None:
        """This agent's events for which ``keep(event)`` is true, until the client leaves."""
        bus = self.agent.events
        queue = bus.subscribe(self.last_event_id())
        try:
            with contextlib.suppress(*STREAM_ENDS):
                await self.open_stream()
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), KEEPALIVE)
                    except TimeoutError:
                        await self.keepalive()
                        continue
                    if keep(event):
                        await self.send(event["type"], event)
        finally:
            bus.unsubscribe(queue)


class EventsHandler(EventStreamHandler):
    async def get(self):
        model = self.get_query_argument("model", None)
        if model is not None:
            validate_name(model)
        version = int_arg(self, "version", None, 1, 2**62)
        await self.stream_bus(
            lambda e: (
                (model is None or e.get("model") == model)
                and (version is None or e.get("version") == version)
            )
        )


class DeploymentEventsHandler(EventStreamHandler, FromCentral):
    """One model's deployment events (``vocabulary.DEPLOY_EVENTS``). A local agent relays
    its central's stream with its own central token (``central_events``), and says with a
    ``central`` event when that stream is up or lost; it opens it again by itself."""

    async def get(self, name: str):
        validate_name(name)
        # An unknown model (a typo) is a 404 naming it, before any stream starts: not an
        # empty stream that never says why nothing comes.
        if self.agent.role == "central":
            await self.known_model(name, monitored=True)
            await self.stream_bus(lambda e: e["type"] in DEPLOY_EVENTS and e.get("model") == name)
            return
        target = self.central_target()  # no central at all: the one error shape, before SSE
        await self.known_at_central(name)
        relayed = central_events.follow(target, name, self.last_event_id())
        with contextlib.suppress(*STREAM_ENDS):
            await self.open_stream()
            async with contextlib.aclosing(relayed):
                async for kind, event in relayed:
                    if kind == "keepalive":
                        await self.keepalive()
                    else:
                        await self.send(event.get("type", kind) if kind == "event" else kind, event)

    async def known_at_central(self, name: str) -> None:
        """Central's 404 for a model it has neither a version nor a log of, passed on; asked
        of its alerts, which know a model as this stream does. Central out of reach (or any
        other refusal) is no verdict: the stream opens and its ``central`` events say why."""
        from ..errors import HandoffError

        try:
            await self.from_central("GET", f"/api/v1/models/{name}/alerts?state=firing")
        except HandoffError as e:
            if e.status == 404:
                raise
