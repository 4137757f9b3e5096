"""Events across replicas sharing one PostgreSQL database.

Each replica appends what it publishes to the events table and tails what the others
appended (ids only grow), so an SSE stream shows everything whichever replica serves it. A
LISTEN connection wakes the tail when a replica appends; the table stays the source of
truth, and the tail also reads it every few seconds, so a lost notification only delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from .outage import failed_round
from .pools import Calls, Publisher

log = logging.getLogger("handoff_agent")


class Listener(Protocol):
    def wait(self, timeout: float) -> bool: ...
    def interrupt(self) -> None: ...
    def close(self) -> None: ...


class Store(Protocol):
    def event_append_many(self, origin: str, events: list[dict]) -> None: ...
    def event_last_id(self) -> int: ...
    def events_since(self, after: int, origin: str) -> tuple[int, list[dict]]: ...
    def event_listener(self) -> Listener | None: ...


class ReplicaEvents:
    """``origin``: this process among the replicas. Appends run on one thread of their own,
    so they keep the order they were published in, many per transaction in a burst."""

    def __init__(self, store: Store, bus: Publisher, pools: Calls, origin: str) -> None:
        self.store, self.bus, self.pools, self.origin = store, bus, pools, origin
        self._out = ThreadPoolExecutor(1, thread_name_prefix="handoff-events")
        self._pending: list[dict] = []
        self._lock = threading.Lock()
        self.listener: Listener | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None

    def share(self, event: dict) -> None:
        """The event bus's sink; this process's stream already has the event."""
        with self._lock:
            self._pending.append(event)
            first = len(self._pending) == 1
        if first:
            with contextlib.suppress(RuntimeError):  # stopping: the pool takes no more work
                self._out.submit(self._flush)

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            try:
                self.store.event_append_many(self.origin, batch)
            except Exception:  # a live feed: the other replicas' panels re-read on reconnect
                failed_round(log, "sharing %d events with the other replicas failed", len(batch))

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="handoff-listen")
        try:
            self.listener = await self.pools.call(self.store.event_listener)
        except Exception:  # no LISTEN connection: polling alone still delivers every event
            log.exception("listening for other replicas' events failed; polling instead")
        self._task = asyncio.ensure_future(self.tail())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_listener()
        await asyncio.get_running_loop().run_in_executor(None, self._out.shutdown, True)

    async def tail(self, interval: float = 0.25, fallback: float = 2.0) -> None:
        """Publish here what the other replicas published: whenever PostgreSQL notifies an
        append and every ``fallback`` seconds; without a listener, every ``interval``."""
        loop = asyncio.get_running_loop()
        last = await self.pools.call(self.store.event_last_id)
        while True:
            try:
                last, found = await self.pools.call(self.store.events_since, last, self.origin)
                for event in found:
                    self.bus.publish(event.pop("type"), relayed=True, **event)
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed poll must not stop the next one
                failed_round(log, "reading other replicas' events failed")
            if self.listener is None:
                await asyncio.sleep(interval)
                continue
            try:
                await loop.run_in_executor(self._pool, self.listener.wait, fallback)
            except asyncio.CancelledError:
                raise
            except Exception:
                failed_round(log, "listening for other replicas' events failed; polling instead")
                await self._close_listener()

    async def _close_listener(self) -> None:
        """Wake the thread waiting on the listener, let it end, then close the connection."""
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.interrupt()
        if self._pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)
        if listener is not None:
            listener.close()
