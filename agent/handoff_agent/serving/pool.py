"""N sandboxed workers per loaded version, kept alive.

A worker that dies (kill -9, a crash in native code, the memory limit) is restarted by its
supervisor; the requests it held are retried once on another worker (predict is
idempotent), and answered 503 only when none can take them within the timeout. A worker
that cannot load its model says why, and the pool is marked failed rather than restarted
in a loop. Nothing here waits without a bound.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import socket
from collections.abc import Awaitable, Callable

from ..sandbox import SandboxRefused
from ..store.blobs import BlobCorrupt, BlobMissing

log = logging.getLogger("handoff_agent")
MAX_LINE = 256 << 20


class WorkerUnavailable(Exception):
    """No worker could answer (all dead, restarting, or timed out): the caller says 503."""


class WorkerDied(Exception):
    pass


class ServingWorker:
    """One started worker: its sandbox handle and the request channel."""

    def __init__(self, handle, sock: socket.socket):
        self.handle, self.sock = handle, sock
        self.pending: collections.deque[asyncio.Future] = collections.deque()
        self.reader = self.writer = None
        self.ready_info: dict = {}
        self._reading: asyncio.Task | None = None
        self.dead = asyncio.Event()

    async def open(self, timeout: float) -> dict:
        self.reader, self.writer = await asyncio.open_connection(sock=self.sock, limit=MAX_LINE)
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise WorkerDied(f"the worker exited while loading: {self._stderr_tail()}")
        self.ready_info = json.loads(line)
        if not self.ready_info.get("ready"):
            raise LoadFailed(self.ready_info.get("error") or "the model did not load")
        self._reading = asyncio.ensure_future(self._read())
        return self.ready_info

    def _stderr_tail(self) -> str:
        return (self.handle.stderr().strip().splitlines() or ["no output"])[-1][:300]

    async def _read(self) -> None:
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                if self.pending:
                    fut = self.pending.popleft()
                    if not fut.done():
                        fut.set_result(json.loads(line))
        except (OSError, ValueError, asyncio.LimitOverrunError) as e:
            log.warning("serving worker channel failed: %s", e)
        finally:
            self._fail_all()

    def _fail_all(self) -> None:
        self.dead.set()
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_exception(WorkerDied("the worker died"))

    @property
    def alive(self) -> bool:
        return not self.dead.is_set() and self.handle.alive

    def submit(self, request: dict) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if not self.alive:
            fut.set_exception(WorkerDied("the worker is gone"))
            return fut
        self.pending.append(fut)
        self.writer.write(json.dumps(request).encode() + b"\n")
        return fut

    async def stop(self) -> None:
        self.dead.set()
        await self.handle.stop()
        if self._reading is not None:
            self._reading.cancel()
        self._fail_all()
        with contextlib.suppress(OSError):
            if self.writer is not None:
                # The transport owns the socket: closing it behind the transport's back frees
                # the descriptor number while the loop still watches it (a new connection
                # could get that number and be refused).
                self.writer.close()
            else:
                self.sock.close()


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class LoadFailed(Exception):
    """The model did not load in a worker: a property of the version, so no restart."""


SpawnFn = Callable[[socket.socket], Awaitable[object]]


class WorkerPool:
    """``workers`` supervised workers for one version. ``spawn(channel)`` starts one
    (the server's: sandbox, bundle copy, job) and returns its sandbox handle."""

    def __init__(
        self, key: str, spawn: SpawnFn, workers: int, load_timeout: float, request_timeout: float
    ):
        self.key, self.spawn = key, spawn
        self.size = max(1, workers)
        self.load_timeout, self.request_timeout = load_timeout, request_timeout
        self.members: list[ServingWorker | None] = [None] * self.size
        self.error: str | None = None
        self.info: dict = {}
        self.restarts = 0
        self.closing = False
        self._changed = asyncio.Event()
        self._rr = itertools.count()
        self._tasks = [asyncio.ensure_future(self._supervise(i)) for i in range(self.size)]

    @property
    def ready(self) -> bool:
        return any(w is not None and w.alive for w in self.members)

    @property
    def settled(self) -> bool:
        """Ready, or failed for good: either way a router may stop waiting for it."""
        return self.ready or self.error is not None

    def pids(self) -> list[int]:
        return [w.handle.proc.pid for w in self.members if w is not None and w.alive]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _supervise(self, index: int) -> None:
        delay = 0.1
        while not self.closing:
            parent, child = socket.socketpair()
            worker = None
            try:
                try:
                    handle = await self.spawn(child)
                finally:
                    child.close()  # the worker holds it now: its death is our EOF
                worker = ServingWorker(handle, parent)
                self.info = await worker.open(self.load_timeout)
                self.members[index] = worker
                self._notify()
                delay = 0.1
                await worker.dead.wait()
                if not self.closing:
                    self.restarts += 1
                    log.warning("serving worker of %s died; restarting it", self.key)
            except LoadFailed as e:
                self.error = str(e)
                log.error("%s does not load for serving: %s", self.key, e)
                self._notify()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # spawn refused, timed out, died while loading
                log.warning("serving worker of %s failed to start: %s", self.key, e)
                lasting = None  # a load that no retry will mend
                if isinstance(e, BlobCorrupt | BlobMissing):  # its stored bundle is bad or gone
                    lasting = (
                        f"{e}; `jupyter handoff fsck` lists damaged blobs, restore it from a backup"
                    )
                elif isinstance(e, SandboxRefused):
                    lasting = str(e)
                if lasting is not None:
                    self.error = lasting
                    self._notify()
                    return
            finally:
                self.members[index] = None
                if worker is not None:
                    await worker.stop()
                else:
                    parent.close()
                self._notify()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def wait_settled(self, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.settled:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    async def _a_worker(self, avoid=None) -> ServingWorker:
        deadline = asyncio.get_running_loop().time() + self.load_timeout
        while True:
            live = [w for w in self.members if w is not None and w.alive and w is not avoid]
            if not live and avoid is not None and avoid.alive:
                live = [avoid]
            if live:
                least = min(len(w.pending) for w in live)
                best = [w for w in live if len(w.pending) == least]
                return best[next(self._rr) % len(best)]
            if self.error is not None or self.closing:
                raise WorkerUnavailable(self.error or f"{self.key} is no longer served")
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise WorkerUnavailable(f"no worker of {self.key} came up in time")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def predict(self, request: dict) -> dict:
        """The worker's answer (``ok`` true or false). Raises WorkerUnavailable."""
        tried = None
        for _attempt in range(2):
            worker = await self._a_worker(avoid=tried)
            fut = worker.submit(request)
            # A timer on the answer itself (wait_for adds a future and a callback per request)
            expire = asyncio.get_running_loop().call_later(self.request_timeout, _expire, fut)
            try:
                return await fut
            except WorkerDied:
                tried = worker  # retried once: predicting again is harmless
            except TimeoutError:
                log.warning("a serving worker of %s timed out; restarting it", self.key)
                await worker.handle.stop()
                raise WorkerUnavailable(
                    f"the model took longer than {self.request_timeout:.0f} s"
                ) from None
            finally:
                expire.cancel()
        raise WorkerUnavailable(f"the workers of {self.key} died while answering")

    async def close(self, drain: float = 10.0) -> None:
        """Stop taking work, let what is in flight finish (bounded), then stop the workers."""
        self.closing = True
        busy = [f for w in self.members if w is not None for f in w.pending]
        if busy:
            await asyncio.wait(busy, timeout=drain)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._notify()
