"""Runs queued checks in worker subprocesses, off the event loop, and commits each result.

The agent never loads a model: it hands a sandboxed worker (``sandbox.py``) the bundle's open
file and the check names, reads JSON lines back, and ends the worker, with everything it started,
when a check overruns its time, when the worker says something off-protocol, and when it is done.

A version's checks are split over up to ``slots`` workers at once (the CPUs, and as many workers
at their memory limit as the memory budget holds): the first checks (``PROVISIONAL_CHECKS``:
loads, smoke, performance) spread over them and first in each, so the provisional verdict
waits for the longest of them, not their sum; the others spread by their usual cost. Each worker
loads the model itself; the results are the same as in one worker. When a basic check (loads,
smoke) hangs or crashes, the version's other workers are stopped and their checks skipped, as one
worker would have skipped them; performance, which starts beside them, may have failed on its
own by then (a model that hangs or crashes in smoke does the same in performance).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

from .pools import Calls
from .sandbox import Limits, ProtocolError, SandboxRefused, worker_env  # noqa: F401  (re-export)
from .store.blobs import BlobError
from .vocabulary import PROVISIONAL_CHECKS

log = logging.getLogger(__name__)


def corrupt_text(digest: str, e: Exception) -> str:
    return (
        f"The stored bundle {digest[:12]}… cannot be read ({e}). Run `jupyter handoff fsck` to "
        "list damaged blobs, then push the model again."
    )


BASIC = ("loads", "smoke")  # when these hang or crash, the rest is skipped
# A check's usual seconds (bench/checks.py, a 200-tree forest on 5,000 rows, 2 December 2026),
# to spread a version's checks over its workers until this agent has timed its own; a check
# not named here counts 0.3 s.
COST = {
    "loads": 0.02,
    "smoke": 0.06,
    "schema": 0.01,
    "performance": 0.2,
    "latency": 0.6,
    "fairness": 0.25,
    "explainability": 1.3,
    "drift": 0.2,
}
# With a champion, performance and latency time both models (bench/checks.py: 1.6x and 1.9x)
CHAMPION_FACTOR = {"performance": 1.5, "latency": 2.0}
UNKNOWN_COST = 0.3
LEARN = 0.5  # the weight of a check's latest duration in its running cost


def _factor(name: str, champion: bool) -> float:
    return CHAMPION_FACTOR.get(name, 1.0) if champion else 1.0


def plan(
    names: list[str], slots: int, costs: dict[str, float] | None = None, champion: bool = False
) -> list[list[str]]:
    """The checks of one version as groups, one per worker. ``PROVISIONAL_CHECKS`` go first,
    spread over the groups, so the provisional verdict waits for the longest of them, not
    their sum; then the others, longest first, each to the group that ends soonest.
    ``costs``: seconds per check as this agent has seen them, without a champion (else
    ``COST``); with one, the checks that time both models count ``CHAMPION_FACTOR`` times."""

    def cost(name: str) -> float:
        return (costs or {}).get(name, COST.get(name, UNKNOWN_COST)) * _factor(name, champion)

    first = [n for n in PROVISIONAL_CHECKS if n in names]
    rest = [n for n in names if n not in first]
    groups: list[list[str]] = [[] for _ in range(max(1, min(slots, len(names))))]
    load = [0.0] * len(groups)
    for batch in (first, rest):
        for name in sorted(batch, key=lambda n: -cost(n)):
            i = load.index(min(load))
            groups[i].append(name)
            load[i] += cost(name)
    rank = {n: i for i, n in enumerate(PROVISIONAL_CHECKS)}
    for g in groups:  # the first checks lead, in their order (loads before smoke); sort is stable
        g.sort(key=lambda n: rank.get(n, len(rank)))
    return [g for g in groups if g]


def learn(costs: dict[str, float], check: str, duration, champion: bool = False) -> None:
    """Fold a finished check's duration into ``costs``, so the next versions' checks are
    spread by what they take on this agent's models, not on a forest. One table serves
    versions with and without a champion: a first comparison is planned from the versions
    before it."""
    if not isinstance(duration, (int, float)) or not 0 <= duration < 3600:
        return
    duration /= _factor(check, champion)
    before = costs.get(check)
    costs[check] = duration if before is None else before + LEARN * (duration - before)


class _Version:
    """One version's run across its workers: a basic failure in one stops the others."""

    def __init__(self, context: dict, costs: dict[str, float]):
        self.abort = asyncio.Event()
        self.reason = ""
        self.context = context  # the job context, read once for all its workers
        self.champion = bool(context.get("champion"))
        self.costs = costs  # where its checks' durations are learnt

    def fail_basic(self, check: str) -> None:
        self.reason = f"Skipped: the model failed {check}."
        self.abort.set()


class Jobs(Protocol):
    """Where runs come from and results go (``check_flow.CheckFlow``)."""

    def job_context(self, model: str, number: int) -> dict: ...
    async def start_check(self, run_id: int, model: str, number: int, check: str) -> bool: ...
    async def finish_check(self, run_id, status, message, result, duration) -> None: ...


class Blobs(Protocol):
    def local_copy(self, digest: str) -> BinaryIO: ...


class Spawner(Protocol):
    async def spawn(self, module: str, limits: Limits): ...


def worker_slots(workers: int, memory_limit: int | None, memory_budget: int | None) -> int:
    """Workers at once: ``workers`` (the CPUs by default), and no more than fit in
    ``memory_budget`` when each may use its whole ``memory_limit``; at least one."""
    slots = max(1, workers or 1)
    if memory_budget and memory_limit:
        slots = min(slots, max(1, memory_budget // memory_limit))
    return slots


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
        spares: int | None = None,
        limits: Limits | None = None,
        memory_budget: int | None = None,
    ):
        self.jobs, self.blobs, self.pools = jobs, blobs, pools
        self.available, self.trusted = available, trusted
        self.slots = worker_slots(pool_size, memory_limit, memory_budget)
        self.sem = asyncio.Semaphore(self.slots)
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.sandbox = sandbox
        # Workers that run at once share the cores: each numeric library in each gets its
        # share of threads. With its own (all cores), two workers' BLAS threads spin against
        # each other: a forest's performance check took 450 ms beside explainability, not 300.
        self.limits = dataclasses.replace(
            limits or Limits(memory=memory_limit),
            threads=max(1, (os.cpu_count() or 1) // self.slots),
        )
        self.tasks: set[asyncio.Task] = set()
        self.spare_count = self.slots if spares is None else max(0, spares)
        self.spares: list = []  # warm workers, at most spare_count
        self.costs: dict[str, float] = {}  # seconds per check as run here (for ``plan``)

    def schedule(self, runs: list[dict], done: Callable[[list[dict]], None] | None = None):
        """Start the queued runs, grouped by version, each version's over its workers.
        ``done(runs)``: when a version's task ends, however it ends."""
        by_version: dict[tuple, list[dict]] = {}
        for r in runs:
            by_version.setdefault((r["model"], r["number"], r["digest"]), []).append(r)
        for (model, number, digest), group in by_version.items():
            task = asyncio.ensure_future(self.run_version(model, number, digest, group))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            if done is not None:
                task.add_done_callback(lambda _t, group=group: done(group))

    async def run_version(self, model: str, number: int, digest: str, runs: list[dict]):
        """Run one version's ``runs`` now and return when they are all finished (a
        revalidation awaits it; pushes go through ``schedule``)."""
        by_name = {r["check_name"]: r for r in runs}
        context = await self.pools.call(self.jobs.job_context, model, number)
        state = _Version(context, self.costs)
        groups = plan(list(by_name), self.slots, state.costs, state.champion)
        try:
            # One verified copy for all of the version's workers (one hash, or one download
            # from S3, not one per worker): each opens its own description of it, its
            # /proc/self/fd path, so none moves another's offset.
            files = await self._bundles(digest, context["champion"])
        except BlobError as e:
            for r in runs:
                await self.jobs.finish_check(r["id"], "error", corrupt_text(digest, e), {}, 0)
            return
        try:
            await asyncio.gather(
                *(
                    self._run_group(model, number, [by_name[n] for n in g], state, files)
                    for g in groups
                )
            )
        finally:
            for f in files.values():
                f.close()

    async def _run_group(self, model, number, runs, state: _Version, files: dict):
        async with self.sem:
            pending = list(runs)
            while pending and not state.abort.is_set():
                pending = await self._run_worker(model, number, pending, state, files)
            for r in pending:  # another worker's basic check failed
                await self.jobs.finish_check(r["id"], "skip", state.reason, {}, 0.0)

    async def _run_worker(self, model, number, runs, state: _Version, bundles: dict) -> list[dict]:
        """Run ``runs`` in one worker, given the version's ``bundles`` (``_bundles``); return
        the ones it did not reach."""
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
        context = state.context
        for spec in specs:
            spec["config"] = context["config"].get(spec["name"], {})
        job = {
            "bundle": "",
            "checks": specs,
            "champion": context["champion"],
            "previous_manifest": context["previous_manifest"],
            "trusted_types": self.trusted(),
        }
        files, rows = dict(bundles), None
        if context.get("data"):  # a revalidation: the source's rows instead of the pushed
            job["data"] = {"file": "", "target": context["data"]["target"]}
            try:
                rows = files["data.file"] = open(context["data"]["path"], "rb")  # noqa: SIM115
            except OSError:
                await self._release(worker)
                raise
        names = {s["id"]: s["name"] for s in specs}
        done: set[int] = set()
        current, failure, aborted = None, None, False
        started = time.monotonic()
        abort = asyncio.ensure_future(state.abort.wait())
        try:
            # A CPU-time backstop: the wall-clock timeout below is what normally ends a check.
            worker.limits = Limits(**{**vars(self.limits), "cpu": self._cpu_budget(len(specs))})
            try:
                await worker.send(job, files)
            finally:
                if rows is not None:
                    rows.close()  # the worker holds its own descriptor now
            while True:
                message = asyncio.ensure_future(worker.next_message(self.timeout))
                await asyncio.wait({message, abort}, return_when=asyncio.FIRST_COMPLETED)
                if not message.done():  # another worker's basic check failed
                    message.cancel()
                    aborted = True
                    break
                event = message.result()
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
                    learn(state.costs, names[run_id], event.get("duration"), state.champion)
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
            abort.cancel()
            returncode, stderr = await self._release(worker, graceful=failure is None)
        if aborted:
            return [r for r in runs if r["id"] not in done]  # skipped by _run_group
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
                state.fail_basic(basic)
                for r in runs:
                    if r["id"] not in done:
                        await self.jobs.finish_check(r["id"], "skip", state.reason, {}, 0.0)
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
                except BlobError as e:  # the performance check says why, and warns
                    champion["bundle"] = None
                    champion["error"] = (
                        f"its stored bundle is unreadable ({e}); `jupyter handoff fsck` lists "
                        "damaged blobs"
                    )
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
        """A worker that has already imported the heavy libraries, when one is warm.

        A worker reads its job only after its imports, so spares started early turn the
        ~1.5 s of importing sklearn into time already spent. They are replaced when a worker
        ends (``_release``), not at once: a spare importing beside the checks slows them."""
        while self.spares:
            spare = self.spares.pop(0)
            if spare.alive:
                return spare
            await spare.stop()
        return await self._spawn()

    async def _release(self, worker, graceful: bool = False):
        out = await worker.stop(graceful=graceful)
        await self.warm()
        return out

    async def warm(self) -> None:
        """Keep ``spare_count`` warm workers (one per slot by default)."""
        with contextlib.suppress(SandboxRefused):
            while len(self.spares) < self.spare_count:
                self.spares.append(await self._spawn())

    @property
    def spare(self):
        """The next warm worker, if any."""
        return self.spares[0] if self.spares else None

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        spares, self.spares = self.spares, []
        for spare in spares:
            await spare.stop()

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
