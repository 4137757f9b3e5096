"""Built-in check ``latency``: single-row p50/p99, batch throughput, size and peak memory.

Each figure is measured for the champion too, when there is one, their calls alternating, and
the check warns (or fails) when the candidate is that many times slower.
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


def measure(models: list, X, cfg: dict, feed=None) -> list[tuple[dict, str | None]]:
    """The latency figures of each model on the same rows of ``X``, or an error message.
    The models' calls alternate, row by row and batch by batch: a check that starts or ends
    beside this one (checks run side by side) changes the machine's speed for both alike,
    so the candidate is not judged against a champion timed on another machine. ``feed``
    turns rows of X into what the models take (``CheckContext.as_input``)."""
    feed = feed or (lambda rows: rows)
    batch = X.iloc[: cfg["batch_rows"]]
    warm = []
    for model in models:
        out, err = call(model.predict, feed(batch))  # also warms caches and lazy imports
        warm.append(err or rows_mismatch(out, len(batch)))
    out: list[tuple[dict, str | None]] = [({}, err) for err in warm]
    ok = [k for k, err in enumerate(warm) if err is None]
    if not ok:
        return out
    figures, err = call(_measure, [models[k] for k in ok], X, cfg, feed)
    if err is None:
        for k, got in zip(ok, figures, strict=True):
            out[k] = (got, None)
        return out
    for k in ok:  # one raised midway: each alone, to say whose error it is
        alone, err = call(_measure, [models[k]], X, cfg, feed)
        out[k] = (alone[0], None) if err is None else ({}, err)
    return out


def _measure(models: list, X, cfg: dict, feed) -> list[dict]:
    n = len(models)
    times: list[list[float]] = [[] for _ in models]
    deadline = time.perf_counter() + n * cfg["max_seconds"] / 2
    for i in range(cfg["single_row_repeats"]):
        row = feed(X.iloc[i % len(X) : i % len(X) + 1])
        for k in range(n) if i % 2 == 0 else reversed(range(n)):  # neither always goes first
            t0 = time.perf_counter()
            models[k].predict(row)
            times[k].append(time.perf_counter() - t0)
        if i >= 4 and time.perf_counter() > deadline:
            break
    batch = feed(X.iloc[: cfg["batch_rows"]])
    best, peaks = [], []
    for model in models:
        tracemalloc.start()
        try:
            t0 = time.perf_counter()
            model.predict(batch)
            best.append(time.perf_counter() - t0)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    deadline = time.perf_counter() + n * cfg["max_seconds"] / 2
    for _ in range(cfg["batch_repeats"] - 1):
        if time.perf_counter() > deadline:
            break
        for k, model in enumerate(models):
            t0 = time.perf_counter()
            model.predict(batch)
            best[k] = min(best[k], time.perf_counter() - t0)
    out = []
    for k, model in enumerate(models):
        ms = np.array(times[k]) * 1000
        out.append(
            {
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "single_row_calls": len(times[k]),
                "batch_rows": min(len(X), cfg["batch_rows"]),
                "throughput_rows_per_s": len(batch) / best[k] if best[k] > 0 else None,
                "peak_memory_mb": peaks[k] / 2**20,
                "serialized_mb": (serialized_size(model) or 0) / 2**20,
            }
        )
    if n == 2:  # the first's time over the second's, call for call: see LatencyCheck.run
        out[1]["paired_ratio"] = float(np.median(np.divide(times[0], np.maximum(times[1], 1e-9))))
    return out


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
        models = [ctx.model] + ([ctx.champion] if ctx.champion is not None else [])
        measured = measure(models, ctx.X, cfg, ctx.as_input)
        mine, err = measured[0]
        if err:
            return result("fail", err)
        metrics, statuses, notes = dict(mine), ["pass"], []
        rows = [{"model": "candidate", **mine}]
        if cfg["max_p99_ms"] is not None and mine["p99_ms"] > cfg["max_p99_ms"]:
            statuses.append("fail")
            notes.append(f"Single-row p99 is {mine['p99_ms']:.1f} ms, over {cfg['max_p99_ms']} ms.")
        if ctx.champion is not None:
            theirs, cerr = measured[1]
            if cerr:
                statuses.append("warn")
                notes.append(f"Could not time the champion: {cerr}.")
            else:
                # Judged on the median of each call's time over the champion's next to it: a
                # busy machine stretches a call at random, which moves one model's p50 but
                # seldom the median of the pairs. Timed alone (one raised), the p50s' ratio.
                ratio = theirs.pop("paired_ratio", None)
                if ratio is None:
                    ratio = mine["p50_ms"] / max(theirs["p50_ms"], 1e-6)
                rows.append({"model": "champion", **theirs})
                metrics.update({f"champion_{k}": v for k, v in theirs.items()})
                metrics["p50_ratio"] = ratio
                compare = (
                    f"single-row p50 {mine['p50_ms']:.2f} ms vs {theirs['p50_ms']:.2f} ms for "
                    f"the champion; {ratio:.2f}x its time, call for call"
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
