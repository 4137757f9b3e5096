"""Group commit: several callers' writes in one transaction, one fsync for all of them.

SQLite takes one writer, and each commit (WAL, synchronous FULL) waits for the disk. While
one batch commits, the next callers queue; their writes then go in together, each in its own
savepoint, so one that fails is undone alone and the rest commit. Every caller gets its
answer only after the commit it was part of: an acknowledged write survives kill -9. No
caller waits for a batch to fill: a lone write commits at once. A batch waits for another
process's lock only what is left of the busy timeout since its oldest caller asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor

from .store.engine import asked_at

log = logging.getLogger("handoff_agent")


class GroupCommit:
    def __init__(self, store, executor: Executor, max_batch: int = 64):
        self.store, self.executor, self.max_batch = store, executor, max_batch
        self._pending: list[tuple] = []
        self._draining = False
        self._task: asyncio.Task | None = None
        self.batches = 0  # commits made, for the benchmark's profile
        self.calls = 0

    async def run(self, fn, *args):
        """``fn(*args)`` in a shared transaction; returns or raises once it is committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((fn, args, future, time.monotonic()))
        if not self._draining:
            self._draining = True
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    outcomes = await loop.run_in_executor(self.executor, self._commit, batch)
                except BaseException as e:  # the executor is gone: nothing was committed
                    outcomes = [(False, e)] * len(batch)
                for (_fn, _args, future, _at), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():  # its caller went away
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._draining = False

    def _commit(self, batch: list[tuple]) -> list[tuple[bool, object]]:
        outcomes: list[tuple[bool, object]] = []
        try:
            with asked_at(min(at for *_, at in batch)), self.store.transaction():
                for fn, args, _future, _at in batch:
                    try:
                        with self.store.savepoint():
                            outcomes.append((True, fn(*args)))
                    except Exception as e:
                        outcomes.append((False, e))
        except Exception as e:  # the commit itself failed: none of the batch is durable
            log.warning("a group commit of %d writes failed: %s", len(batch), e)
            return [(False, e)] * len(batch)
        self.batches += 1
        self.calls += len(batch)
        return outcomes
