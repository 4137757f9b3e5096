"""Central's trust probes: warm sandboxed workers that read a bundle's types, reused.

A probe reads the skops schema of a delivered bundle (``trust._probe``: JSON from a zip, no
import of what it names). It still runs sandboxed, since the zip and the JSON come from
outside, but a new bubblewrap'd Python per delivery cost about 650 ms, most of intake's time.
So a few workers stay up and take one job after another (``sandbox.serve_jobs``). A worker
that fails, hangs past the timeout, breaks the protocol or has served ``max_jobs`` jobs is
stopped, with everything it started, and the next probe gets a fresh one.

``python -I -m handoff_agent.probes`` is the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from .sandbox import Limits, Outcome, ProtocolError, Sandbox, SandboxRefused, Worker

MODULE = "handoff_agent.probes"


class ProbePool:
    def __init__(
        self,
        sandbox: Sandbox,
        limits: Limits,
        size: int,
        timeout: float,
        max_jobs: int = 1000,
        module: str = MODULE,
    ):
        self.sandbox, self.limits, self.timeout = sandbox, limits, timeout
        self.size, self.max_jobs, self.module = max(1, size), max_jobs, module
        self._sem = asyncio.Semaphore(self.size)
        self._idle: list[Worker] = []
        self._jobs: dict[int, int] = {}  # id(worker) -> jobs served
        self.replaced = 0  # workers stopped for failing, hanging or misbehaving

    async def run(self, job: dict, files: dict) -> Outcome:
        """One job in a warm worker; the same ``Outcome`` a one-off worker gives."""
        async with self._sem:
            try:
                worker = await self._take()
            except (SandboxRefused, OSError) as e:
                return Outcome(None, e, False, None, "")
            result, error = None, None
            try:
                result = await worker.ask(job, files, self.timeout)
            except (TimeoutError, ProtocolError, OSError) as e:
                error = e
            if result is not None and error is None and worker.alive:
                self._jobs[id(worker)] = self._jobs.get(id(worker), 0) + 1
                if self._jobs[id(worker)] < self.max_jobs:
                    self._idle.append(worker)
                    return Outcome(result, None, True, None, "")
                return Outcome(result, None, True, *await self._stop(worker))
            self.replaced += 1
            code, stderr = await self._stop(worker)
            return Outcome(result, error, True, code, stderr)

    async def _take(self) -> Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                return worker
            self.replaced += 1
            await self._stop(worker)
        return await self.sandbox.spawn(self.module, self.limits)

    async def _stop(self, worker: Worker) -> tuple[int | None, str]:
        self._jobs.pop(id(worker), None)
        return await worker.stop()

    async def warm(self) -> None:
        """Start the workers now, so the first deliveries do not wait for them."""
        with contextlib.suppress(SandboxRefused, OSError):
            while len(self._idle) < self.size:
                self._idle.append(await self.sandbox.spawn(self.module, self.limits))

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for worker in idle:
            await self._stop(worker)


def main() -> int:
    from .sandbox import serve_jobs
    from .trust import _probe

    return serve_jobs(_probe)  # an unreadable file is a verdict, not a crash


if __name__ == "__main__":
    sys.exit(main())
