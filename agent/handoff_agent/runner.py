"""Runs queued checks in worker subprocesses, off the event loop, and commits each result.

The agent never loads a model: it hands the worker a bundle path and check names, reads JSON
lines back, and kills the worker when a check overruns its time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
import time

log = logging.getLogger(__name__)

BASIC = ("loads", "smoke")  # when these hang or crash, the rest is skipped

# Only these variables reach a worker: no tokens, no secrets, no PYTHONPATH tricks.
ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME", "SYSTEMROOT", "OMP_NUM_THREADS")
ENV_KEEP_PREFIX = ("OPENBLAS_", "MKL_")


def worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIX)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


async def spawn_worker(module: str, cwd: str | None = None):
    """A clean ``python -I -m MODULE``: isolated mode, scrubbed env, pipes for the JSON job."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-m",
        module,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd or tempfile.gettempdir(),
        env=worker_env(),
    )


class CheckRunner:
    def __init__(
        self, agent, pool_size: int, timeout: float, memory_limit: int, keep_spare: bool = True
    ):
        self.agent = agent
        self.sem = asyncio.Semaphore(pool_size)
        self.timeout = timeout
        self.memory_limit = memory_limit
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
            ep = self.agent.checks_available.get(r["check_name"])
            if ep is None:
                await self.agent.finish_check(
                    r["id"], "error", f"No check named {r['check_name']!r} is registered.", {}, 0
                )
                continue
            specs.append({"id": r["id"], "name": r["check_name"], "entry_point": ep})
        if not specs:
            return []
        context = await self.agent.call(self.agent.job_context, model, number)
        for spec in specs:
            spec["config"] = context["config"].get(spec["name"], {})
        job = {
            "bundle": str(self.agent.store.path(digest)),
            "digest": digest,
            "checks": specs,
            "memory_limit": self.memory_limit,
            "champion": context["champion"],
            "previous_manifest": context["previous_manifest"],
            "trusted_types": self.agent.trusted_types,
        }
        names = {s["id"]: s["name"] for s in specs}
        proc, cwd = await self._take_worker()
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
            stderr_task = asyncio.ensure_future(proc.stderr.read())
            done: set[int] = set()
            current = None
            started = time.monotonic()
            try:
                while True:
                    line = await asyncio.wait_for(proc.stdout.readline(), self.timeout)
                    if not line:
                        break
                    event = json.loads(line)
                    if event["event"] == "start":
                        current, started = event["id"], time.monotonic()
                        await self.agent.start_check(current, model, number, names[current])
                    elif event["event"] == "result":
                        done.add(event["id"])
                        result = {k: event.get(k) for k in ("metrics", "tables", "plots")}
                        await self.agent.finish_check(
                            event["id"],
                            event["status"],
                            event.get("message", ""),
                            result,
                            event.get("duration", 0.0),
                        )
                        current = None
                failure = None
            except TimeoutError:
                failure = (
                    f"The check did not finish within {self.timeout:.0f} s and was stopped. "
                    "The model may hang in predict. Raise c.HandoffAgent.check_timeout if it "
                    "is only slow."
                )
            finally:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
            stderr = (await stderr_task).decode(errors="replace")[-2000:]
        finally:
            cwd.cleanup()
        if failure is None and len(done) < len(specs):
            failure = self._crash_message(proc.returncode, stderr)
        remaining = [r for r in runs if r["id"] not in done]
        if current is not None or (failure and remaining):
            victim = current if current is not None else remaining[0]["id"]
            await self.agent.finish_check(
                victim, "fail", failure, {"stderr": stderr}, time.monotonic() - started
            )
            done.add(victim)
            basic = names.get(victim)
            if basic in BASIC:
                # The model cannot even predict; every other check would hang or crash too.
                for r in runs:
                    if r["id"] not in done:
                        await self.agent.finish_check(
                            r["id"], "skip", f"Skipped: the model failed {basic}.", {}, 0.0
                        )
                        done.add(r["id"])
        return [r for r in runs if r["id"] not in done]

    async def _spawn(self):
        cwd = tempfile.TemporaryDirectory(prefix="handoff-worker-")
        return await spawn_worker("handoff_agent.worker", cwd.name), cwd

    async def _take_worker(self):
        """A worker that has already imported the heavy libraries, and a new spare behind it.

        A worker reads its job only after its imports, so a spare started early turns the
        ~1.5 s of importing sklearn into time already spent."""
        spare, self.spare = self.spare, None
        if spare is None or spare[0].returncode is not None:
            spare = await self._spawn()
        if self.keep_spare:
            self.spare = await self._spawn()
        return spare

    async def warm(self) -> None:
        if self.keep_spare and self.spare is None:
            self.spare = await self._spawn()

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        if self.spare is not None:
            proc, cwd = self.spare
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            cwd.cleanup()
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
