"""Built-in check ``latency``: single-row p50/p99, batch throughput, size and peak memory.

Each figure is measured for the champion too, when there is one, and the check warns (or
fails) when the candidate is that many times slower.
"""

from __future__ import annotations

import pickle
import time
import tracemalloc

import numpy as np

from ..plugins import CheckContext, CheckResult
from ._util import call, fmt, missing, result, rows_mismatch, settings, worst


class _Counter:
    """A write-only file that only counts bytes, so sizing a model costs no memory."""

    size = 0

    def write(self, b) -> int:
        n = memoryview(b).nbytes  # protocol 5 may hand over a PickleBuffer, which has no len()
        self.size += n
        return n


def serialized_size(model) -> int | None:
    counter = _Counter()
    try:
        pickle.dump(model, counter, protocol=5)
    except Exception:
        return None
    return counter.size


def measure(model, X, cfg: dict, feed=None) -> tuple[dict, str | None]:
    """The latency figures of ``model`` on rows of ``X``, or an error message. ``feed`` turns
    rows of X into what the model takes (``CheckContext.as_input``)."""
    feed = feed or (lambda rows: rows)
    batch = X.iloc[: cfg["batch_rows"]]
    out, err = call(model.predict, feed(batch))  # also warms caches and lazy imports
    if err is None:
        err = rows_mismatch(out, len(batch))
    if err is None:
        figures, err = call(_measure, model, X, cfg, feed)
    return (figures, None) if err is None else ({}, err)


def _measure(model, X, cfg: dict, feed) -> dict:
    times = []
    deadline = time.perf_counter() + cfg["max_seconds"] / 2
    for i in range(cfg["single_row_repeats"]):
        row = feed(X.iloc[i % len(X) : i % len(X) + 1])
        t0 = time.perf_counter()
        model.predict(row)
        times.append(time.perf_counter() - t0)
        if len(times) >= 5 and time.perf_counter() > deadline:
            break
    batch = feed(X.iloc[: cfg["batch_rows"]])
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        model.predict(batch)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    best = elapsed
    deadline = time.perf_counter() + cfg["max_seconds"] / 2
    for _ in range(cfg["batch_repeats"] - 1):
        if time.perf_counter() > deadline:
            break
        t0 = time.perf_counter()
        model.predict(batch)
        best = min(best, time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "single_row_calls": len(times),
        "batch_rows": min(len(X), cfg["batch_rows"]),
        "throughput_rows_per_s": len(batch) / best if best > 0 else None,
        "peak_memory_mb": peak / 2**20,
        "serialized_mb": (serialized_size(model) or 0) / 2**20,
    }


class LatencyCheck:
    name = "latency"
    title = "Prediction latency, throughput, size and memory, compared with the champion"
    needs = ("X",)
    compares_champion = True
    defaults = {
        "single_row_repeats": 50,
        "batch_rows": 1000,
        "batch_repeats": 3,
        "max_seconds": 3.0,  # time budget per model; fewer repeats when predict is slow
        "max_p99_ms": None,  # fail when single-row p99 is above this
        "warn_slowdown": 2.0,  # warn when p50 is this many times the champion's
        "max_slowdown": 5.0,  # fail when p50 is this many times the champion's
    }

    def run(self, ctx: CheckContext, **kwargs) -> CheckResult:
        skip = missing(self, ctx)
        if skip:
            return skip
        cfg = settings(self, ctx, kwargs)
        mine, err = measure(ctx.model, ctx.X, cfg, ctx.as_input)
        if err:
            return result("fail", err)
        metrics, statuses, notes = dict(mine), ["pass"], []
        rows = [{"model": "candidate", **mine}]
        if cfg["max_p99_ms"] is not None and mine["p99_ms"] > cfg["max_p99_ms"]:
            statuses.append("fail")
            notes.append(f"Single-row p99 is {mine['p99_ms']:.1f} ms, over {cfg['max_p99_ms']} ms.")
        if ctx.champion is not None:
            theirs, cerr = measure(ctx.champion, ctx.X, cfg, ctx.as_input)
            if cerr:
                statuses.append("warn")
                notes.append(f"Could not time the champion: {cerr}.")
            else:
                rows.append({"model": "champion", **theirs})
                metrics.update({f"champion_{k}": v for k, v in theirs.items()})
                ratio = mine["p50_ms"] / max(theirs["p50_ms"], 1e-6)
                metrics["p50_ratio"] = ratio
                compare = (
                    f"single-row p50 {mine['p50_ms']:.2f} ms vs {theirs['p50_ms']:.2f} ms for "
                    f"the champion ({ratio:.2f}x)"
                )
                if ratio > cfg["max_slowdown"]:
                    statuses.append("fail")
                    notes.insert(0, f"Much slower than the champion: {compare}.")
                elif ratio > cfg["warn_slowdown"]:
                    statuses.append("warn")
                    notes.insert(0, f"Slower than the champion: {compare}.")
                else:
                    notes.insert(0, f"Latency: {compare}.")
        if not notes or ctx.champion is None:
            notes.append(
                f"Single-row p50 {mine['p50_ms']:.2f} ms, p99 {mine['p99_ms']:.2f} ms; "
                f"{fmt(mine['throughput_rows_per_s'], 0)} rows/s in batches of "
                f"{mine['batch_rows']}; {mine['serialized_mb']:.2f} MB serialized."
            )
        return result(worst(statuses), " ".join(notes), metrics, {"latency": rows})
