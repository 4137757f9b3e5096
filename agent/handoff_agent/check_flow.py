"""The check flow: a pushed version's checks are queued, run, finished and reported.

Built by the agent (the composition root) from the few things it needs, each a small
Protocol; the runner (``runner.py``) reports back through it. Once the first checks are in
(``vocabulary.PROVISIONAL_CHECKS``) a provisional verdict is published, which nothing acts on.
When a version's last check is in, its verdict's hooks run (central moves the version's stage)
and the forwarder is woken.

Replicas sharing a database share the queue: a run is claimed for a lease that the replica
running it renews (``keep_claims``); a replica that dies for good lets its runs lapse, and any
replica's next pass runs them again. Only the claimer's result counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

from . import reports
from .outage import failed_round, outage, until_recorded
from .pools import Calls, Publisher
from .store.blobs import BlobUnavailable
from .store.versions import CHECK_LEASE
from .versions import VersionService
from .vocabulary import PROVISIONAL_FIELD

log = logging.getLogger(__name__)


class Store(Protocol):
    def claim_checks(self, owner, lease, mine): ...
    def claim_check(self, run_id, owner): ...
    def renew_checks(self, owner, ids, lease): ...
    def version_id(self, name, number): ...
    def get_version(self, name, number): ...
    def manifest_of(self, name, number): ...
    def add_reports(self, version_id, digests) -> list[str]: ...
    def restore_pruned(self, version_id, present, actor): ...
    def unconcluded(self, received): ...


class Blobs(Protocol):
    def put_bytes(self, data: bytes) -> str: ...
    def exists(self, digest: str) -> bool: ...
    def delete(self, digest: str) -> None: ...


class Gate(Protocol):
    def check_config(self, check: str, overrides=None) -> dict: ...


class Runner(Protocol):
    def schedule(self, runs: list[dict], done: Callable[[list[dict]], None]) -> None: ...


VerdictHook = Callable[[str, int, str], Awaitable[None]]  # (model, number, verdict)


class CheckFlow:
    def __init__(
        self,
        store: Store,
        blobs: Blobs,
        versions: VersionService,
        gate: Gate,
        checks: list[str],
        events: Publisher,
        pools: Calls,
        owner: str,
        wake: Callable[[], None] = lambda: None,
        lease: float = CHECK_LEASE,
    ):
        self.store, self.blobs, self.versions, self.gate = store, blobs, versions, gate
        self.checks, self.events, self.pools, self.owner = list(checks), events, pools, owner
        self.wake = wake  # a verdict may have queued a hand-off: the forwarder looks now
        self.verdict_hooks: list[VerdictHook] = []
        self.runner: Runner | None = None  # set when the agent starts
        self.lease = lease  # seconds a claim holds; renewed every third of it
        self._held: set[int] = set()  # runs claimed here and not finished: renewed
        self._starting: set[asyncio.Task] = set()
        self._keeper: asyncio.Task | None = None

    async def create_version(self, name, digest, size, manifest, actor):
        """A push: the version and its queued checks (one transaction). The checks are
        claimed and started just after, once the push has had its answer."""
        version, created = await self.pools.call(
            self.versions.create_version,
            name,
            digest,
            size,
            manifest,
            actor or "analyst",
            list(self.checks),
            full=False,
        )
        if not created:  # the same bytes again: the version as it stands
            found = await self.pools.read(self.store.get_version, name, version["number"])
            if found["pruned"]:  # retention removed them, and this push brought them back
                present = partial(self.blobs.exists, digest)
                vid, user = version["id"], actor or "analyst"
                if await self.pools.call(self.store.restore_pruned, vid, present, user):
                    found["pruned"] = None
            return found, False
        self.events.publish(
            "version",
            model=name,
            version=version["number"],
            status=version["status"],
            checks=list(self.checks),
        )
        if version.get("verdict"):  # no checks: concluded with the push itself
            await self.write_reports(name, version["number"], version["id"])
            self._start(self._concluded(name, version["number"], version["verdict"]["verdict"]))
        self._start(self.schedule_queued())
        self.wake()
        return version, created

    def _start(self, work) -> None:
        """Run ``work`` on the loop after the caller's answer; a failure is logged (the
        queued runs stay queued, and the next push or start claims them)."""
        task = asyncio.ensure_future(work)
        self._starting.add(task)
        task.add_done_callback(self._started)

    async def settle(self) -> None:
        """Let the checks being started reach the runner (the agent stops it next)."""
        if self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)

    def _started(self, task: asyncio.Task) -> None:
        self._starting.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None and outage(error):  # keep_claims' next pass starts them
            log.warning("starting the queued checks waits: %s", str(error).splitlines()[0])
        elif error is not None:
            log.error("starting the queued checks failed", exc_info=error)

    async def schedule_queued(self) -> None:
        """Claim and start the queued runs, and those whose claim lapsed (their replica
        died): on a push, at start, and every third of the lease (``keep_claims``)."""
        if self.runner is None:  # not started: the runs stay queued for whoever starts
            return
        runs = await self.pools.call(
            self.store.claim_checks, self.owner, self.lease, tuple(self._held)
        )
        fresh = [r for r in runs if r["id"] not in self._held]
        self._held.update(r["id"] for r in fresh)
        for r in fresh:
            if r.get("taken_from"):
                log.warning(
                    "running %s of %s:%s again: the claim of agent %s on it lapsed",
                    r["check_name"], r["model"], r["number"], r["taken_from"],
                )  # fmt: skip
        if fresh:
            self.runner.schedule(fresh, self._let_go)

    def _let_go(self, runs: list[dict]) -> None:
        """A version's runs are over here: finished, or their task ended without a result
        (then their claim lapses, and a pass runs them again)."""
        self._held.difference_update(r["id"] for r in runs)

    async def keep_claims(self) -> None:
        """Every third of the lease: renew the claims on the runs this process holds (one
        statement for all of them), then a scheduling pass, which also takes over the runs
        of a replica that stopped renewing; so a quiet system recovers too."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                if self._held:
                    await self.pools.call(
                        self.store.renew_checks, self.owner, tuple(self._held), self.lease
                    )
                await self.schedule_queued()
            except asyncio.CancelledError:
                raise
            except Exception:  # the next round tries again
                failed_round(log, "renewing and claiming check runs failed")

    def start_keeping(self) -> None:
        self._keeper = asyncio.ensure_future(self.keep_claims())

    async def stop_keeping(self) -> None:
        task, self._keeper = self._keeper, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def job_context(self, model: str, number: int) -> dict:
        """What a worker needs beyond the bundle: the champion, the previous manifest, and
        each check's settings (policy thresholds, then the --gate overrides applied here)."""
        manifest = self.store.manifest_of(model, number) or {}
        overrides = self.gate.applied_overrides(manifest.get("gate"))
        return {
            "champion": self.versions.champion(model, number),
            "previous_manifest": self.store.manifest_of(model, number - 1),
            "config": {c: self.gate.check_config(c, overrides) for c in self.checks},
        }

    async def start_check(self, run_id: int, model: str, number: int, check: str) -> bool:
        """Mark a claimed run running; False when it is no longer this agent's (a replica
        took it over)."""
        claimed = await until_recorded(
            f"the start of {check} for {model}:{number}",
            lambda: self.pools.call(self.store.claim_check, run_id, self.owner),
        )
        if not claimed:
            return False
        self.events.publish("check", model=model, version=number, check=check, status="running")
        return True

    async def finish_check(self, run_id, status, message, result, duration) -> None:
        out = await until_recorded(
            f"check run {run_id}'s outcome",
            lambda: self.pools.call(
                self.versions.finish_check, run_id, status, message, result, duration, self.owner
            ),
        )
        self._held.discard(run_id)
        if out is None:  # finished already, or taken over once its claim lapsed: not ours
            log.warning("check run %s is no longer this agent's: its result is dropped", run_id)
            return
        self.events.publish(
            "check",
            model=out["model"],
            version=out["version"],
            check=out["check"],
            status=status,
            message=message,
            duration=duration,
        )
        if PROVISIONAL_FIELD in out:  # the first checks are in; the others still run
            self.events.publish(
                PROVISIONAL_FIELD,
                model=out["model"],
                version=out["version"],
                status="checking",
                **out[PROVISIONAL_FIELD],
            )
        if "verdict" in out:
            self.events.publish(
                "verdict",
                model=out["model"],
                version=out["version"],
                status=out["status"],
                **out["verdict"],
            )
            await self.write_reports(out["model"], out["version"], out["version_id"])
            await self._concluded(out["model"], out["version"], out["verdict"]["verdict"])
            self.wake()

    def resume_concluded(self, received: bool) -> None:
        """At start, in the background: finish what a verdict committed before a kill (or
        a blob store outage) left undone, its reports and its hooks (``received``: central,
        whose hook moves the version on from ``received``), so no version waits there or
        without its report for good. The hook moves a version only from the stage it
        expects, so a replica doing the same at once changes nothing twice."""
        self._start(self._resume_concluded(received))

    async def _resume_concluded(self, received: bool) -> None:
        for v in await self.pools.read(self.store.unconcluded, received):
            try:
                await self.write_reports(v["model"], v["number"], v["id"])
                await self._concluded(v["model"], v["number"], v["verdict"]["verdict"])
            except Exception:  # the next start tries again
                log.exception("concluding %s:%s failed", v["model"], v["number"])
        self.wake()

    async def _concluded(self, model: str, number: int, verdict: str) -> None:
        for hook in self.verdict_hooks:  # each moves nothing twice: tried until it is in
            await until_recorded(
                f"the verdict's outcome for {model}:{number}",
                partial(hook, model, number, verdict),
            )

    async def write_reports(self, model: str, number: int, version_id: int) -> None:
        await until_recorded(
            f"the reports of {model}:{number}",
            lambda: self._write_reports(model, number, version_id),
        )

    async def _write_reports(self, model: str, number: int, version_id: int) -> None:
        version = await self.pools.call(self.store.get_version, model, number)
        rendered = await self.pools.run_io(reports.render, version)
        # Three files, three fsyncs: side by side, not one after another
        stored = await asyncio.gather(
            *(self.pools.run_io(self.blobs.put_bytes, data) for data in rendered.values())
        )
        digests = dict(zip(rendered, stored, strict=True))
        replaced = await self.pools.call(self.store.add_reports, version_id, digests)  # all
        for digest in replaced:  # the reports written before these (central's validation)
            try:
                await self.pools.run_io(self.blobs.delete, digest)
            except (OSError, BlobUnavailable) as e:  # an orphan fsck notes; the reports stand
                log.warning("An old report's blob %s was not removed: %s", digest, e)
        self.events.publish("report", model=model, version=number, kinds=sorted(digests))
