"""The agent's thread pools, and the small Protocols its services are typed against.

One thread runs the metadata store's calls, in order (the API's latency is the event loop's,
not the database's); another pool hashes, copies and fsyncs. Services receive a ``Calls``
(these two doors off the event loop) and a ``Publisher`` (the event bus), never the agent.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol


class Calls(Protocol):
    async def call(self, fn, *args, **kwargs) -> Any:
        """Run a metadata-store call on the store's thread."""
        ...

    async def run_io(self, fn, *args) -> Any:
        """Run blocking I/O (blobs, hashing) in the I/O pool."""
        ...


class Publisher(Protocol):
    def publish(self, kind: str, relayed: bool = False, **data) -> dict: ...


class Pools:
    def __init__(self, io_threads: int = 4):
        self.db = ThreadPoolExecutor(1, thread_name_prefix="handoff-db")
        self.io = ThreadPoolExecutor(io_threads, thread_name_prefix="handoff-io")

    async def call(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            self.db, partial(fn, *args, **kwargs)
        )

    async def run_io(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.io, partial(fn, *args))
