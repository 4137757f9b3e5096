"""The forwarder loop: delivers due outbox rows with backoff, and mirrors central's stages.

Rows are claimed before they are attempted, so several processes sharing one database never
send the same row at once.

Every attempt sends a verified local copy of the stored body: a blob corrupted in the store is
never sent, and its row goes to dead-letter with a pointer to ``jupyter handoff fsck``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import BinaryIO, Protocol

from .. import outbox
from ..disk_room import out_of_space
from ..outage import failed_round, until_recorded
from ..plugins import Delivery, DestinationContext, ForwardError, NotReady, StageSource
from ..pools import Calls, Publisher
from ..store.blobs import BlobError, BlobUnavailable, BlobWriter
from .central import delivered_artefacts

log = logging.getLogger(__name__)


def corrupt_message(row: dict, digest: str) -> str:
    return (
        f"The stored copy of {row['model']}:{row['number']} (blob {digest[:12]}…) no longer "
        "matches its digest: it is corrupt on disk, so it was not sent. Run `jupyter handoff "
        "fsck` to list damaged blobs, then push the model again."
    )


NO_ROOM = "this agent's disk is full: the delivery waits until it has room"
STALE_AUDIT = "audit_backwards"  # central: this body's audit rows end behind its anchor
REFUSED_SLOWER = 30  # a destination refusing our token is asked this many times less often
STOP_WAIT = 10.0  # seconds a stop waits for a delivery cut short to put its row back


class Store(Protocol):
    def get_version(self, name, number): ...
    def outbox_claim(self, owner, now, limit, ordered): ...
    def outbox_unclaim(self, row_id): ...
    def outbox_set_body(self, row_id, digest): ...
    def outbox_delivered(self, row, remote): ...
    def outbox_body_kept(self, digest): ...
    def outbox_delivered_bodies(self, after=0, limit=100): ...
    def outbox_body_removed(self, row_id): ...
    def outbox_retry(self, row, error, delay): ...
    def outbox_dead(self, row, error): ...
    def outbox_rebuild(self, row, error): ...


class Blobs(Protocol):
    def put(self, source, expected=None) -> str: ...
    def put_bytes(self, data: bytes) -> str: ...
    def local_copy(self, digest: str) -> BinaryIO: ...
    def open(self, digest: str) -> BinaryIO: ...
    def delete(self, digest: str) -> None: ...


class Forwarder:
    """``owner``: this agent's id (its outbox claims); ``contexts(delivery)``: what a
    destination gets (``ForwardService.context``); ``sync(source)``: mirror its stages."""

    def __init__(
        self,
        store: Store,
        blobs: Blobs,
        pools: Calls,
        events: Publisher,
        owner: str,
        destinations: dict,
        contexts: Callable[[Delivery], DestinationContext],
        sync: Callable[[StageSource], Awaitable[None]],
        base: float,
        cap: float,
        interval: float,
    ):
        self.store, self.blobs, self.pools, self.events = store, blobs, pools, events
        self.owner, self.contexts, self.sync = owner, contexts, sync
        self.destinations = destinations
        self.base, self.cap, self.interval = base, cap, interval
        self.wake = asyncio.Event()
        self.stopping = False
        self.task: asyncio.Task | None = None
        self.sweep: asyncio.Task | None = None
        self.sync_tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())
        self.sweep = asyncio.ensure_future(self._sweep_delivered())  # beside the deliveries
        # Destinations with stages of their own (plugins.StageSource) are mirrored back.
        self.sync_tasks = [
            asyncio.ensure_future(self._sync_loop(d))
            for d in self.destinations.values()
            if isinstance(d, StageSource)
        ]

    async def stop(self) -> None:
        """Cancel the loops and wait for them: a delivery cut short unclaims its row while
        the pools still take work (after they shut down, that failed, and the loop went on
        retrying, logging, holding the agent's exit up for good)."""
        self.stopping = True
        tasks = [t for t in (self.task, self.sweep, *self.sync_tasks) if t is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                if self.stopping:
                    return
                failed_round(log, "forwarder tick failed; retrying")
            self.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.interval)

    async def tick(self) -> None:
        """Attempt every due row; go again while rows leave the queue, so an ordered
        destination's next row follows at once rather than on the next wake."""
        store, owner = self.store, self.owner
        ordered = tuple(n for n, d in self.destinations.items() if getattr(d, "ordered", False))
        while True:
            moved = False
            rows = await self.pools.call(store.outbox_claim, owner, time.time(), 20, ordered)
            for row in rows:
                moved |= await self.attempt(row) in ("delivered", "dead")
            if not moved:
                return

    async def attempt(self, row: dict) -> str:
        try:
            state = await self._attempt(row)
        except asyncio.CancelledError:
            await self.pools.call(self.store.outbox_unclaim, row["id"])
            raise
        except Exception:  # the next tick tries again, not only once the claim lapses
            await self._record(row, self.store.outbox_unclaim, row["id"])
            raise
        self._publish(row, *state)
        return state[0]

    async def _attempt(self, row: dict) -> tuple:
        """(state, error), and the destination's answer once delivered."""
        pools, store = self.pools, self.store
        dest = self.destinations.get(row["destination"])
        if dest is None:
            error = (
                f"no destination {row['destination']!r} is configured (c.HandoffAgent.forward_to)"
            )
            await self._record(row, store.outbox_dead, row, error)
            return "dead", error
        version = await pools.call(store.get_version, row["model"], row["number"])
        delivery = Delivery(
            row["delivery_id"],
            row["destination"],
            row["model"],
            row["number"],
            row["digest"],
            attempt=row["attempts"] + 1,
            version=version,
        )
        ctx = self.contexts(delivery)
        if not row["body_digest"]:
            try:
                body = await dest.body(ctx, delivery)
                digest = await pools.run_io(self._store, body)
            except NotReady as e:
                delay = outbox.backoff(row["attempts"], self.base, self.cap)
                await self._record(row, store.outbox_retry, row, str(e), delay)
                return "retrying", str(e)
            except ForwardError as e:
                await self._record(row, store.outbox_dead, row, str(e))
                return "dead", str(e)
            except BlobUnavailable as e:
                return await self._retry(row, str(e))
            except OSError as e:  # no room to build or keep the body: it waits, not dies
                if out_of_space(e) is None:
                    raise
                return await self._retry(row, NO_ROOM)
            await pools.call(store.outbox_set_body, row["id"], digest)
            row["body_digest"] = digest
        try:
            body = await pools.run_io(self.blobs.local_copy, row["body_digest"])
        except BlobUnavailable as e:  # the store is down, not the body damaged
            return await self._retry(row, str(e))
        except (BlobError, OSError) as e:
            if out_of_space(e) is not None:  # no room for the copy (S3): not the body's fault
                return await self._retry(row, NO_ROOM)
            error = corrupt_message(row, row["body_digest"])
            await self._record(row, store.outbox_dead, row, error)
            return "dead", error
        with body:
            delivery.body = body
            try:
                result = await pools.run_io(partial(dest.deliver, delivery, ctx=ctx))
            except Exception as e:  # a destination's bug: counted and shown, not retried unseen
                log.exception("destination %s failed delivering", row["destination"])
                return await self._retry(row, f"{type(e).__name__}: {e}")
        if result.ok:
            await self._record(row, store.outbox_delivered, row, result.remote)
            await self._discard_body(row)
            return "delivered", "", result.remote
        if result.code == STALE_AUDIT and STALE_AUDIT not in (row.get("last_error") or ""):
            # built before later deliveries moved the destination's anchor (a dead one sent
            # again): built anew, under a new id, once; a second refusal is real and dies
            await self._record(row, store.outbox_rebuild, row, result.error)
            await self._discard_body(row)
            return "retrying", result.error
        if result.retryable:
            delay = outbox.backoff(row["attempts"], self.base, self.cap, result.retry_after)
            await self._record(row, store.outbox_retry, row, result.error, delay)
            return "retrying", result.error
        await self._record(row, store.outbox_dead, row, result.error)
        return "dead", result.error

    async def _discard_body(self, row: dict) -> None:
        """A delivered body goes, and what was made for it (``central.delivered_artefacts``),
        unless a version or another delivery still to go is the same bytes."""
        try:
            for digest in await self.pools.run_io(
                delivered_artefacts, self.blobs, row["body_digest"]
            ):
                if not await self.pools.call(self.store.outbox_body_kept, digest):
                    await self.pools.run_io(self.blobs.delete, digest)
            await self.pools.call(self.store.outbox_body_removed, row["id"])
        except Exception:  # delivered all the same; the next start sweeps it
            log.warning("the delivered body of %s:%s was kept", row["model"], row["number"])

    async def _sweep_delivered(self) -> None:
        """At start: the bodies of deliveries done before the agent last stopped (or before it
        removed them at all) go too."""
        after = 0
        try:
            while rows := await self.pools.call(self.store.outbox_delivered_bodies, after):
                for row in rows:
                    await self._discard_body(row)
                after = rows[-1]["id"]
        except Exception:  # the next start sweeps again
            log.exception("sweeping the delivered bodies failed")

    async def _retry(self, row: dict, error: str) -> tuple[str, str]:
        delay = outbox.backoff(row["attempts"], self.base, self.cap)
        await self._record(row, self.store.outbox_retry, row, error, delay)
        return "retrying", error

    async def _record(self, row: dict, fn, *args):
        """An attempt's outcome, written once the database takes it (another process held
        its lock, say): a delivery made is recorded, not left claimed for the whole lease
        and made again."""
        what = f"the delivery of {row['model']}:{row['number']} to {row['destination']}"
        return await until_recorded(what, lambda: self.pools.call(fn, *args))

    def _store(self, body) -> str:
        """A destination's body as a blob: bytes, a store writer, a binary file or a path."""
        store = self.blobs
        if isinstance(body, bytes):
            return store.put_bytes(body)
        if isinstance(body, BlobWriter):
            try:
                return body.commit()
            except BaseException:  # e.g. no room for its last bytes: its temp file goes
                body.abort()
                raise
        if isinstance(body, Path):  # a temp file the destination wrote (older plugins)
            try:
                with open(body, "rb") as f:
                    return store.put(f)
            finally:
                body.unlink(missing_ok=True)
        with body:
            body.seek(0)
            return store.put(body)

    def _publish(self, row: dict, state: str, error: str = "", remote=None) -> None:
        self.events.publish(
            "forward",
            model=row["model"],
            version=row["number"],
            destination=row["destination"],
            state=state,
            error=error,
            **({"remote": remote} if remote else {}),
        )

    async def _sync_loop(self, source: StageSource) -> None:
        while True:
            try:
                await self.sync(source)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stage sync from %s failed; retrying", source.name)
            refused = getattr(source, "token_refused", None)  # said once; asked again seldom
            await asyncio.sleep(source.status_interval * (REFUSED_SLOWER if refused else 1))
