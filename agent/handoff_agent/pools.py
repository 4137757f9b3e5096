"""The agent's thread pools, and the small Protocols its services are typed against.

Writes run on the store's writer threads: one on SQLite (a file takes one writer at a time;
more would only wait), a few on PostgreSQL, whose pooled connections commit side by side (row
locks order what must be ordered). Reads run in their own threads, so listings never queue
behind intake (WAL readers don't wait for the writer). Another pool hashes, copies and fsyncs;
one more reads spool entries that kernels are still writing (each waits on its kernel, so a
kernel that hangs never holds up anyone else's blob I/O).
A write's wait for another process's lock on the SQLite file counts from when it was asked
for (``store.engine.asked_at``), not from when the writer thread reached it: writes queued
behind a write waiting out that lock are each answered within the busy timeout.
Services receive a ``Calls`` (these doors off the event loop) and a ``Publisher`` (the event
bus), never the agent.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol

from .group_commit import GroupCommit
from .store.engine import asked_at


class Calls(Protocol):
    async def call(self, fn, *args, **kwargs) -> Any:
        """Run a metadata-store write (or a read that must follow writes in order)."""
        ...

    async def read(self, fn, *args, **kwargs) -> Any:
        """Run a read-only store call, off the writers' queue."""
        ...

    async def commit(self, fn, *args) -> Any:
        """A write whose caller answers once it is durable (intake): grouped on SQLite."""
        ...

    async def run_io(self, fn, *args) -> Any:
        """Run blocking I/O (blobs, hashing) in the I/O pool."""
        ...


class Publisher(Protocol):
    def publish(self, kind: str, relayed: bool = False, **data) -> dict: ...


class Pools:
    """``store`` is given on SQLite only: its intake writes then share commits (one fsync
    for a burst, ``group_commit.py``)."""

    def __init__(
        self,
        writers: int = 1,
        readers: int = 4,
        io_threads: int = 4,
        store=None,
        follow_threads: int = 16,
    ):
        self.db = ThreadPoolExecutor(writers, thread_name_prefix="handoff-db")
        self.reads = ThreadPoolExecutor(readers, thread_name_prefix="handoff-read")
        self.io = ThreadPoolExecutor(io_threads, thread_name_prefix="handoff-io")
        self.follows = ThreadPoolExecutor(follow_threads, thread_name_prefix="handoff-follow")
        self.group_commit = GroupCommit(store, self.db) if store is not None else None

    async def call(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            self.db, partial(_asked, time.monotonic(), fn, args, kwargs)
        )

    async def read(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            self.reads, partial(fn, *args, **kwargs)
        )

    async def commit(self, fn, *args):
        if self.group_commit is None:
            return await self.call(fn, *args)
        return await self.group_commit.run(fn, *args)

    async def run_io(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.io, partial(fn, *args))

    async def run_follow(self, fn, *args):
        """Read a spool entry a kernel is still writing (``ingest.Follow``)."""
        return await asyncio.get_running_loop().run_in_executor(self.follows, partial(fn, *args))

    def shutdown(self) -> None:
        """The reads and I/O; the writer stays for the store's last calls (``agent.stop``)."""
        self.follows.shutdown(wait=True)
        self.io.shutdown(wait=True)
        self.reads.shutdown(wait=True)


def _asked(at: float, fn, args, kwargs):
    with asked_at(at):
        return fn(*args, **kwargs)
