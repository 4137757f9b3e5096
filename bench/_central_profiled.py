"""``python -m handoff_agent`` under cProfile, every thread, for bench/central.py --profile.

cProfile sees only the thread that enables it, and central does its SQL in one thread and its
hashing and fsync in a pool, so each thread gets its own profile, written when it ends (the
agent's clean stop joins its pools). The agent's ``call`` / ``run_io`` are also timed: how long
each offloaded function waited for its thread, and how long it ran. Output files are
``$HANDOFF_BENCH_PROFILE`` (+ ``.<thread>`` and ``.timings.json``). Nothing in the agent changes.
"""

from __future__ import annotations

import asyncio
import atexit
import cProfile
import json
import os
import threading
import time
from functools import partial

OUT = os.environ.pop("HANDOFF_BENCH_PROFILE")
TIMINGS: dict[str, list[float]] = {}
_lock = threading.Lock()
_run = threading.Thread.run


def _profiled_run(self):
    prof = cProfile.Profile()
    prof.enable()
    try:
        _run(self)
    finally:
        prof.disable()
        prof.dump_stats(f"{OUT}.{self.name}")


threading.Thread.run = _profiled_run


def _name(fn) -> str:
    while isinstance(fn, partial):
        fn = fn.func
    return getattr(fn, "__qualname__", repr(fn))


def _timed(pool_attr: str):
    async def offload(self, fn, *args, **kwargs):
        queued = time.perf_counter()
        started = []

        def work():
            started.append(time.perf_counter())
            return fn(*args, **kwargs)

        try:
            return await asyncio.get_running_loop().run_in_executor(getattr(self, pool_attr), work)
        finally:
            end = time.perf_counter()
            if started:
                with _lock:
                    row = TIMINGS.setdefault(_name(fn), [0, 0.0, 0.0])
                    row[0] += 1
                    row[1] += started[0] - queued
                    row[2] += end - started[0]

    return offload


def _timed_coroutine(fn):
    """Wall time of an awaited step that is not an offloaded call (e.g. the sandboxed probe)."""

    async def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            with _lock:
                row = TIMINGS.setdefault(f"{fn.__qualname__} (awaited)", [0, 0.0, 0.0])
                row[0] += 1
                row[2] += time.perf_counter() - t

    return wrapper


def _write_timings() -> None:
    with open(f"{OUT}.timings.json", "w") as f:
        json.dump(TIMINGS, f)


def main() -> None:
    from handoff_agent import agent, cli

    agent.HandoffAgent.call = _timed("_db")
    agent.HandoffAgent.run_io = _timed("_io")
    from handoff_agent.handlers.pipeline import IntakeHandler

    agent.HandoffAgent.probe_types = _timed_coroutine(agent.HandoffAgent.probe_types)
    agent.HandoffAgent.receive = _timed_coroutine(agent.HandoffAgent.receive)
    IntakeHandler.post = _timed_coroutine(IntakeHandler.post)
    atexit.register(_write_timings)
    prof = cProfile.Profile()
    prof.enable()
    try:
        cli.main()
    finally:
        prof.disable()
        prof.dump_stats(OUT)


if __name__ == "__main__":
    main()
