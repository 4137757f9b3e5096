"""Notices to webhook destinations (CI, on-call, chat): an alert, a guardrail rollback, a
data-source trigger, a review or trust request. One signed POST per destination, its delivery
id kept across attempts so a receiver can drop a repeat. Each notice is a row in the metadata
store (``store/notices.py``), ``keep``-ed in the transaction of the change that owes it (a
version now waits for people, an alert fired or cleared, a canary rolled back, a watch's
trigger carried out), so a crash right after the commit cannot lose it; the loop sends it,
woken at once by ``wake``. One refused for now (5xx, 429, a connection error) is tried again
after each delay of ``retry_delays`` (or the Retry-After asked, if longer), by this agent or,
after a restart or on another replica, whoever claims it when due; then it is given up with
one log line. A notice's ``url`` kept as a path (``/api/v1/…``) is completed with the
sender's own URL at each attempt: an agent started again on another port links to itself,
not to where it listened when the change committed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from ..outage import failed_round
from .http import post_signed

log = logging.getLogger("handoff_agent")


class Notices:
    """``webhooks()``: the destinations a notice goes to now; ``run_io``: runs a blocking call
    off the loop; ``call``: runs a store method on the metadata thread; ``owner``: this
    agent's id, for its claims; ``base_url()``: this agent's URL now (a path's prefix)."""

    def __init__(
        self,
        webhooks: Callable[[], list],
        run_io: Callable[..., Awaitable],
        retry_delays: Sequence[float],
        store,
        call: Callable[..., Awaitable],
        owner: str,
        base_url: Callable[[], str] = lambda: "",
    ):
        self.webhooks, self.run_io, self.retry_delays = webhooks, run_io, tuple(retry_delays)
        self.store, self.call, self.owner, self.base_url = store, call, owner, base_url
        # Due rows are looked for at half the shortest delay (at most every 5 s): a retry is
        # late by no more than that.
        self.poll = min((*self.retry_delays, 10.0)) / 2
        self._task: asyncio.Task | None = None
        self._due = asyncio.Event()  # a notice kept in a transaction: look now, not at the poll

    def start(self) -> None:
        """Resume the notices left waiting (by a restart of this agent, or any replica)."""
        if self.webhooks():
            self._task = asyncio.ensure_future(self._loop())

    def keep(self, kind: str, event: dict) -> None:
        """Inside the caller's transaction (on the metadata thread): the notice, a row for
        each destination due now, committed with the change that owes it; ``wake`` after the
        commit sends it now."""
        body = _body(kind, event)
        for dest in self.webhooks():
            delivery = f"{kind}-{uuid.uuid4().hex}"
            self.store.notice_add(kind, dest.name, delivery, body, time.time())

    def wake(self) -> None:
        """A notice was kept: the loop claims it now rather than at its next poll."""
        self._due.set()

    async def _attempt(self, row: dict, dest) -> None:
        body = _linked(row["body"], self.base_url())
        result = await self.run_io(_post, dest, body.encode(), row["delivery_id"])
        attempts = row["attempts"] + 1
        next_try = None
        if result.ok:
            pass  # taken: the row goes
        elif result.retryable and attempts <= len(self.retry_delays):
            delay = max(self.retry_delays[attempts - 1], min(result.retry_after or 0, 3600))
            next_try = time.time() + delay
        elif attempts > 1:
            log.warning(
                "%s notice to %s failed after %d attempts: %s",
                row["kind"],
                dest.name,
                attempts,
                result.error,
            )
        else:
            log.warning("%s notice to %s failed: %s", row["kind"], dest.name, result.error)
        try:
            await self.call(
                self.store.notice_attempted, row["id"], attempts, next_try, result.error
            )
        except Exception:  # its claim lapses, and it is sent again under its delivery id
            failed_round(log, "a webhook notice's attempt could not be recorded")

    async def _loop(self) -> None:
        released = False
        while True:
            try:
                if not released:  # claims this agent held when it stopped or died
                    await self.call(self.store.notices_release, self.owner)
                    released = True
                rows = await self.call(self.store.notices_claim, self.owner, time.time())
                known = {d.name: d for d in self.webhooks()}
                for row in rows:
                    dest = known.get(row["destination"])
                    if dest is None:  # the destination left the configuration
                        log.warning(
                            "%s notice to %s dropped: no such webhook destination now",
                            row["kind"],
                            row["destination"],
                        )
                        await self.call(self.store.notice_attempted, row["id"], 0, None, None)
                        continue
                    await self._attempt(row, dest)
            except asyncio.CancelledError:
                raise
            except Exception:  # the next round tries again
                failed_round(log, "the webhook notices' round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self.poll)
            self._due.clear()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _body(kind: str, event: dict) -> str:
    return json.dumps({"type": kind, **event}, sort_keys=True, default=str)


def _linked(body: str, base: str) -> str:
    """The body as sent: a ``url`` kept as a path gets this agent's URL in front."""
    doc = json.loads(body)
    url = doc.get("url")
    if not (isinstance(url, str) and url.startswith("/")):
        return body  # no link, or one kept whole (a row from before paths were kept)
    return json.dumps({**doc, "url": f"{base}{url}"}, sort_keys=True, default=str)


def _post(dest, body: bytes, delivery: str):
    return post_signed(dest.url, body, delivery, dest.secret, "application/json", timeout=10)
