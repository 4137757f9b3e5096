"""Event bus for server-sent events. Lossy by design: clients re-read state.

Published events reach this process's streams at once (the fast path); with a ``sink`` they
are also handed on (to the events table), and ``publish(..., relayed=True)`` brings in the
events other replicas published, so a stream shows everything whichever replica serves it.
"""

from __future__ import annotations

import asyncio
from collections import deque


class EventBus:
    def __init__(self, history: int = 1000, queue_size: int = 1000, sink=None):
        self.sink = sink
        self.seq = 0
        self.recent: deque[dict] = deque(maxlen=history)
        self.queues: set[asyncio.Queue] = set()
        self.queue_size = queue_size
        # Called with each event this process publishes (not those relayed from replicas):
        # what follows a change once, wherever it was made (a reviewer's webhook).
        self.watchers: list = []

    def publish(self, kind: str, relayed: bool = False, **data) -> dict:
        self.seq += 1
        event = {"id": self.seq, "type": kind, **data}
        if self.sink is not None and not relayed:
            self.sink({"type": kind, **data})
        if not relayed:
            for watch in self.watchers:
                watch(event)
        self.recent.append(event)
        for q in list(self.queues):
            if q.full():  # a stalled client loses events, never the agent's memory
                q.get_nowait()
            q.put_nowait(event)
        return event

    def subscribe(self, after: int | None = None) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(self.queue_size)
        if after is not None:
            for event in self.recent:
                if event["id"] > after:
                    q.put_nowait(event)
        self.queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self.queues.discard(q)
