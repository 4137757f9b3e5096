"""The forwarder loop: delivers due outbox rows with backoff, and mirrors central's stages.

Every attempt first checks the stored body against its digest: a blob corrupted on disk is
never sent, and its row goes to dead-letter with a pointer to ``jupyter handoff fsck``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from .. import outbox
from ..blobs import BlobCorrupt
from .api import Delivery, NotReady
from .central import ForwardError, corrupt_message

log = logging.getLogger(__name__)


class Forwarder:
    def __init__(self, agent, destinations: dict, base: float, cap: float, interval: float):
        self.agent = agent
        self.destinations = destinations
        self.base, self.cap, self.interval = base, cap, interval
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.sync_task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())
        if hasattr(self.destinations.get("central"), "status"):
            self.sync_task = asyncio.ensure_future(self._sync_loop())

    async def stop(self) -> None:
        for t in (self.task, self.sync_task):
            if t is not None:
                t.cancel()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("forwarder tick failed; retrying")
            self.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.interval)

    async def tick(self) -> None:
        """Attempt every due row; go again while rows leave the queue, so an ordered
        destination's next row follows at once rather than on the next wake."""
        db = self.agent.registry.db
        ordered = tuple(n for n, d in self.destinations.items() if getattr(d, "ordered", False))
        while True:
            moved = False
            for row in await self.agent.call(outbox.due, db, time.time(), 20, ordered):
                moved |= await self.attempt(row) in ("delivered", "dead")
            if not moved:
                return

    async def attempt(self, row: dict) -> str:
        state = await self._attempt(row)
        self._publish(row, *state)
        return state[0]

    async def _attempt(self, row: dict) -> tuple[str, str]:
        agent, db = self.agent, self.agent.registry.db
        dest = self.destinations.get(row["destination"])
        if dest is None:
            error = (
                f"no destination {row['destination']!r} is configured (c.HandoffAgent.forward_to)"
            )
            await agent.call(outbox.dead, db, row, error)
            return "dead", error
        version = await agent.call(agent.registry.get_version, row["model"], row["number"])
        delivery = Delivery(
            row["delivery_id"],
            row["destination"],
            row["model"],
            row["number"],
            row["digest"],
            attempt=row["attempts"] + 1,
            version=version,
        )
        if not row["body_digest"]:
            try:
                body = await dest.body(agent, delivery)
            except NotReady as e:
                delay = outbox.backoff(row["attempts"], self.base, self.cap)
                await agent.call(outbox.retry, db, row, str(e), delay)
                return "retrying", str(e)
            except ForwardError as e:
                await agent.call(outbox.dead, db, row, str(e))
                return "dead", str(e)
            digest = await agent.run_io(self._store, body)
            await agent.call(outbox.set_body, db, row["id"], digest)
            row["body_digest"] = digest
        try:
            delivery.body = await agent.run_io(agent.store.verify, row["body_digest"])
        except (BlobCorrupt, OSError):
            error = corrupt_message(row, row["body_digest"])
            await agent.call(outbox.dead, db, row, error)
            return "dead", error
        result = await agent.run_io(dest.deliver, delivery)
        if result.ok:
            await agent.call(outbox.delivered, db, row, result.remote)
            return "delivered", ""
        if result.retryable:
            delay = outbox.backoff(row["attempts"], self.base, self.cap, result.retry_after)
            await agent.call(outbox.retry, db, row, result.error, delay)
            return "retrying", result.error
        await agent.call(outbox.dead, db, row, result.error)
        return "dead", result.error

    def _store(self, body) -> str:
        store = self.agent.store
        if isinstance(body, bytes):
            return store.put_bytes(body)
        return store.put_file(Path(body))

    def _publish(self, row: dict, state: str, error: str = "") -> None:
        self.agent.events.publish(
            "forward",
            model=row["model"],
            version=row["number"],
            destination=row["destination"],
            state=state,
            error=error,
        )

    async def _sync_loop(self) -> None:
        central = self.destinations["central"]
        while True:
            try:
                await self.agent.sync_stages(central)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stage sync failed; retrying")
            await asyncio.sleep(central.status_interval)
