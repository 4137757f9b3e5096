"""Notices to webhook destinations (CI, on-call, chat): an alert, a guardrail rollback, a
data-source trigger, a review or trust request. One signed POST per destination, its delivery
id kept across attempts so a receiver can drop a repeat. A refusal for now (5xx, 429, a
connection error) is tried again in the background after each delay of ``retry_delays`` (or
the Retry-After asked, if longer), then given up with one log line. Not durable: the audit
log and the API stay the record of what happened."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence

from .http import post_signed

log = logging.getLogger("handoff_agent")


class Notices:
    """``webhooks()``: the destinations a notice goes to now; ``run_io``: runs a blocking call
    off the loop."""

    def __init__(
        self,
        webhooks: Callable[[], list],
        run_io: Callable[..., Awaitable],
        retry_delays: Sequence[float],
    ):
        self.webhooks, self.run_io, self.retry_delays = webhooks, run_io, tuple(retry_delays)
        self._retrying: set[asyncio.Task] = set()  # a task needs a reference until it ends

    async def send(self, kind: str, event: dict) -> None:
        """The first attempt to each destination is awaited; retries are not."""
        body = json.dumps({"type": kind, **event}, sort_keys=True, default=str).encode()
        for dest in self.webhooks():
            delivery = f"{kind}-{uuid.uuid4().hex}"
            result = await self.run_io(_post, dest, body, delivery)
            if result.ok:
                continue
            if not result.retryable or not self.retry_delays:
                log.warning("%s notice to %s failed: %s", kind, dest.name, result.error)
                continue
            task = asyncio.ensure_future(self._retry(dest, body, delivery, kind, result))
            self._retrying.add(task)
            task.add_done_callback(self._retrying.discard)

    async def _retry(self, dest, body: bytes, delivery: str, kind: str, result) -> None:
        attempts = 1
        for delay in self.retry_delays:
            await asyncio.sleep(max(delay, min(result.retry_after or 0, 3600)))
            result = await self.run_io(_post, dest, body, delivery)
            attempts += 1
            if result.ok or not result.retryable:
                break
        if not result.ok:
            log.warning(
                "%s notice to %s failed after %d attempts: %s",
                kind,
                dest.name,
                attempts,
                result.error,
            )

    def stop(self) -> None:
        for task in self._retrying:
            task.cancel()


def _post(dest, body: bytes, delivery: str):
    return post_signed(dest.url, body, delivery, dest.secret, "application/json", timeout=10)
