"""Runs queued checks in worker subprocesses, off the event loop, and commits each result.

The agent never loads a model: it hands a sandboxed worker (``sandbox.py``) the bundle's open
file and the check names, reads JSON lines back, and ends the worker, with everything it started,
when a check overruns its time, when the worker says something off-protocol, and when it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

from .pools import Calls
from .sandbox import Limits, ProtocolError, SandboxRefused, worker_env  # noqa: F401  (re-export)
from .store.blobs import BlobError

log = logging.getLogger(__name__)


def corrupt_text(digest: str, e: Exception) -> str:
    return (
        f"The stored bundle {digest[:12]}… cannot be read ({e}). Run `jupyter handoff fsck` to "
        "list damaged blobs, then push the model again."
    )


BASIC = ("loads", "smoke")  # when these hang or crash, the rest is skipped


class Jobs(Protocol):
    """Where runs come from and results go (``check_flow.CheckFlow``)."""

    def job_context(self, model: str, number: int) -> dict: ...
    async def start_check(self, run_id: int, model: str, number: int, check: str) -> bool: ...
    async def finish_check(self, run_id, status, message, result, duration) -> None: ...


class Blobs(Protocol):
    def local_copy(self, digest: str) -> BinaryIO: ...


class Spawner(Protocol):
    async def spawn(self, module: str, limits: Limits): ...


class CheckRunner:
    """``available``: check name -> entry point; ``trusted``: the types workers may load, as
    they are now (the list changes while the agent runs)."""

    def __init__(
        self,
        jobs: Jobs,
        blobs: Blobs,
        pools: Calls,
        available: dict[str, Any],
        trusted: Callable[[], list[str]],
        sandbox: Spawner,
        pool_size: int,
        timeout: float,
        memory_limit: int,
        keep_spare: bool = True,
        limits: Limits | None = None,
    ):
        self.jobs, self.blobs, self.pools = jobs, blobs, pools
        self.available, self.trusted = available, trusted
        self.sem = asyncio.Semaphore(pool_size)
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.sandbox = sandbox
        self.limits = limits or Limits(memory=memory_limit)
        self.tasks: set[asyncio.Task] = set()
        self.keep_spare = keep_spare
        self.spare = None

    def schedule(self, runs: list[dict]) -> None:
        """Start the queued runs, grouped so each version loads its model once."""
        by_version: dict[tuple, list[dict]] = {}
        for r in runs:
            by_version.setdefault((r["model"], r["number"], r["digest"]), []).append(r)
        for (model, number, digest), group in by_version.items():
            task = asyncio.ensure_future(self._run_version(model, number, digest, group))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run_version(self, model: str, number: int, digest: str, runs: list[dict]):
        async with self.sem:
            pending = list(runs)
            while pending:
                pending = await self._run_worker(model, number, digest, pending)

    async def _run_worker(self, model, number, digest, runs) -> list[dict]:
        """Run ``runs`` in one worker; return the ones it did not reach."""
        specs = []
        for r in runs:
            ep = self.available.get(r["check_name"])
            if ep is None:
                await self.jobs.finish_check(
                    r["id"], "error", f"No check named {r['check_name']!r} is registered.", {}, 0
                )
                continue
            specs.append({"id": r["id"], "name": r["check_name"], "entry_point": ep})
        if not specs:
            return []
        try:
            worker = await self._take_worker()
        except SandboxRefused as e:
            for spec in specs:
                await self.jobs.finish_check(spec["id"], "error", str(e), {}, 0.0)
            return []
        context = await self.pools.call(self.jobs.job_context, model, number)
        for spec in specs:
            spec["config"] = context["config"].get(spec["name"], {})
        job = {
            "bundle": "",
            "digest": digest,
            "checks": specs,
            "champion": context["champion"],
            "previous_manifest": context["previous_manifest"],
            "trusted_types": self.trusted(),
        }
        try:
            files = await self._bundles(digest, job["champion"])
        except BlobError as e:
            await worker.stop()
            for spec in specs:
                await self.jobs.finish_check(spec["id"], "error", corrupt_text(digest, e), {}, 0)
            return []
        names = {s["id"]: s["name"] for s in specs}
        done: set[int] = set()
        current, failure = None, None
        started = time.monotonic()
        try:
            # A CPU-time backstop: the wall-clock timeout below is what normally ends a check.
            worker.limits = Limits(**{**vars(self.limits), "cpu": self._cpu_budget(len(specs))})
            try:
                await worker.send(job, files)
            finally:
                for f in files.values():
                    f.close()  # the worker holds its own descriptors now
            while True:
                event = await worker.next_message(self.timeout)
                if event is None:
                    break
                kind, run_id = event.get("event"), event.get("id")
                if run_id not in names or kind not in ("start", "result"):
                    raise ProtocolError(f"it sent an unknown message {str(event)[:120]!r}")
                if kind == "start":
                    current, started = run_id, time.monotonic()
                    await self.jobs.start_check(current, model, number, names[current])
                else:
                    done.add(run_id)
                    result = {k: event.get(k) for k in ("metrics", "tables", "plots")}
                    await self.jobs.finish_check(
                        run_id,
                        event.get("status") or "error",
                        event.get("message", ""),
                        result,
                        event.get("duration", 0.0),
                    )
                    current = None
        except TimeoutError:
            failure = (
                f"The check did not finish within {self.timeout:.0f} s and was stopped. "
                "The model may hang in predict. Raise c.HandoffAgent.check_timeout if it "
                "is only slow."
            )
        except ProtocolError as e:
            failure = (
                f"The worker broke the check protocol: {e}. The model may write to file "
                "descriptors it does not own; the worker was stopped."
            )
        except OSError as e:  # the worker died before it took its job
            failure = f"The worker could not take its job ({e})."
        finally:
            returncode, stderr = await worker.stop(graceful=failure is None)
        stderr = stderr[-2000:]
        if failure is None and len(done) < len(specs):
            failure = self._crash_message(returncode, stderr)
        remaining = [r for r in runs if r["id"] not in done]
        if current is not None or (failure and remaining):
            victim = current if current is not None else remaining[0]["id"]
            await self.jobs.finish_check(
                victim, "fail", failure, {"stderr": stderr}, time.monotonic() - started
            )
            done.add(victim)
            basic = names.get(victim)
            if basic in BASIC:
                # The model cannot even predict; every other check would hang or crash too.
                for r in runs:
                    if r["id"] not in done:
                        await self.jobs.finish_check(
                            r["id"], "skip", f"Skipped: the model failed {basic}.", {}, 0.0
                        )
                        done.add(r["id"])
        return [r for r in runs if r["id"] not in done]

    async def _bundles(self, digest: str, champion: dict | None) -> dict:
        """Verified local copies of the bundle and the champion's, as the worker's files."""
        store, files = self.blobs, {}
        try:
            files["bundle"] = await self.pools.run_io(store.local_copy, digest)
            if champion:
                champion["bundle"] = ""
                try:
                    copy = await self.pools.run_io(store.local_copy, champion["digest"])
                    files["champion.bundle"] = copy
                except BlobError as e:  # the performance check says the champion is missing
                    champion["bundle"] = None
                    log.warning("champion %s not readable: %s", champion["digest"][:12], e)
        except BaseException:
            for f in files.values():
                f.close()
            raise
        return files

    def _cpu_budget(self, checks: int) -> int:
        return int(self.timeout * (checks + 1) * max(1, os.cpu_count() or 1)) + 30

    async def _spawn(self):
        return await self.sandbox.spawn("handoff_agent.worker", self.limits)

    async def _take_worker(self):
        """A worker that has already imported the heavy libraries, and a new spare behind it.

        A worker reads its job only after its imports, so a spare started early turns the
        ~1.5 s of importing sklearn into time already spent."""
        spare, self.spare = self.spare, None
        if spare is None or not spare.alive:
            if spare is not None:
                await spare.stop()
            spare = await self._spawn()
        if self.keep_spare:
            self.spare = await self._spawn()
        return spare

    async def warm(self) -> None:
        if self.keep_spare and self.spare is None:
            with contextlib.suppress(SandboxRefused):
                self.spare = await self._spawn()

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        if self.spare is not None:
            await self.spare.stop()
            self.spare = None

    def _crash_message(self, code: int | None, stderr: str) -> str:
        if code is not None and code < 0:
            import signal

            sig = signal.Signals(-code).name
            return f"The worker was killed by {sig} while running the check. {stderr[-300:]}"
        if "MemoryError" in stderr:
            return (
                f"The model exceeded the worker's memory limit of "
                f"{self.memory_limit / 2**30:.1f} GiB. Raise c.HandoffAgent.check_memory_limit "
                "if it really needs more."
            )
        return f"The worker exited with code {code} during the check. {stderr[-300:]}"

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
