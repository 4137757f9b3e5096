"""Serving benchmark: what the prediction log costs (issue 12's logging targets).

A benchmark, not a test. Two parts, in one run:

1. **Capacity.** The model server's ``PredictionLog`` on a real metadata store (SQLite) and
   blob store (files), fed records shaped as the server makes them (one row of 30 features
   and the model's outputs), appended from the event loop, then flushed as Parquet segments
   the way the server does. Logged predictions per second, append to segment listed; target:
   ≥ 50k/s, so the log keeps up with far more than one serving worker answers. With the
   columnar segments (2026-12-01, 100k records, 2-core machine shared with other jobs):
   53k-70k/s (51k/s in a ``--quick`` run started at load 4.5), 232 bytes per record; the
   JSON-text segments before: 15k-16.7k/s, 183 bytes.
2. **Latency.** Two Handoff deployments side by side (a local and a central agent each, a
   LogisticRegression pushed, signed off to production, one serving worker): one logs every
   request (``c.Serving.sample_rate = 1``), the other none (``0``). Single-row p99 at
   concurrency 1 and throughput at 16 on each, alternated so that both see the same machine;
   target: p99 raised by ≤ 10 %.

    python bench/predlog.py                 # 500k records; 2000 requests per deployment
    python bench/predlog.py --quick         # 100k records; 400 requests
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import fmt_s  # noqa: E402
from push import Report  # noqa: E402
from serve import HandoffDeployment, make_models, measure_handoff  # noqa: E402

FEATURES = 30
CAPACITY_TARGET = 50_000
P99_SLACK = 0.10


def records(n: int) -> list[dict]:
    """What ``ModelServer._predict`` appends for a one-row V2 request, answered."""
    import numpy as np

    rng = np.random.default_rng(0)
    values = rng.normal(size=(n, FEATURES)).round(6).tolist()
    names = [f"x{i}" for i in range(FEATURES)]
    now = time.time()
    return [
        {
            "request_id": f"r{i}",
            "model": "bench",
            "version": 1,
            "slot": "production",
            "time": now + i * 1e-4,
            "inputs": {k: [v] for k, v in zip(names, row, strict=True)},
            "latency_ms": 1.0,
            "status": 200,
            "outputs": {"predict": [i % 2], "predict_proba": [[0.4, 0.6]]},
        }
        for i, row in enumerate(values)
    ]


def capacity(home: Path, n: int) -> dict:
    """Seconds from the first append to every record in a listed segment."""
    from handoff_agent.serving.predlog import PredictionLog
    from handoff_agent.store.blobs import open_blob_store
    from handoff_agent.store.metadata import MetadataStore

    store, blobs = MetadataStore.for_home(home), open_blob_store("", home)
    settings = SimpleNamespace(
        sample_rate=1.0, log_flush_seconds=1.0, log_segment_rows=50_000, retention_bytes=1 << 40
    )
    batch = records(n)

    async def run() -> float:
        loop = asyncio.get_running_loop()
        meta, io = ThreadPoolExecutor(1), ThreadPoolExecutor(2)  # as the agent has them

        def call(fn, *a):
            return loop.run_in_executor(meta, fn, *a)

        def run_io(fn, *a):
            return loop.run_in_executor(io, fn, *a)

        plog = PredictionLog(store, blobs, call, run_io, settings)
        plog.start()
        t0 = time.perf_counter()
        for i, record in enumerate(batch):
            plog.append(record)
            if i % 64 == 63:  # the server appends between requests: the flush gets turns
                await asyncio.sleep(0)
        await plog.flush()
        took = time.perf_counter() - t0
        await plog.close()
        assert plog.written == n, (plog.written, n)
        return took

    took = asyncio.run(run())
    segments = store.segments_of("bench")
    return {
        "records": n,
        "seconds": took,
        "per_s": n / took,
        "segments": len(segments),
        "bytes": sum(s["bytes"] for s in segments),
    }


def latency(rep: Report, tmp: Path, args) -> dict:
    """p99 and throughput with and without the log, measured alternately."""
    X, y, models = make_models()
    deps = {
        "logged": HandoffDeployment(tmp, "logged", False, 1, ["--Serving.sample_rate=1.0"]),
        "unlogged": HandoffDeployment(tmp, "unlogged", False, 1, ["--Serving.sample_rate=0.0"]),
    }
    urls = {}
    try:
        for key, dep in deps.items():
            t0 = time.perf_counter()
            dep.start()
            urls[key] = dep.deploy(models["logreg"], "bench-logreg", X, y)[0]
            rep.row(f"{key}: deployed to production", fmt_s(time.perf_counter() - t0), "")
        out = {key: [] for key in deps}
        for _ in range(args.rounds):
            for key, dep in deps.items():
                out[key].append(measure_handoff(urls[key], X, args, dep.headers))
        return out
    finally:
        for dep in deps.values():
            dep.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer records and requests")
    p.add_argument("--records", type=int, default=None, help="records for the capacity part")
    p.add_argument("--rounds", type=int, default=3, help="alternated latency rounds")
    p.add_argument("--out", default=str(HERE / "results" / "predlog.json"))
    args = p.parse_args(argv)
    n = args.records or (100_000 if args.quick else 500_000)
    args.reps = 400 if args.quick else 2000

    t_start, load0 = time.perf_counter(), os.getloadavg()
    rep = Report()
    rep.data["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": load0,
        "args": vars(args),
    }
    with tempfile.TemporaryDirectory(prefix="handoff-bench-predlog-") as d:
        tmp = Path(d)
        rep.section(f"Prediction log capacity ({n:,} records of {FEATURES} features)")
        (tmp / "home").mkdir()
        cap = capacity(tmp / "home", n)
        rep.data["capacity"] = cap
        rep.row("append -> in a listed Parquet segment", fmt_s(cap["seconds"]))
        rep.row(
            "logged predictions per second",
            f"{cap['per_s']:,.0f}/s",
            rep.target("logged_per_s", f">= {CAPACITY_TARGET:,}/s", cap["per_s"],
                       cap["per_s"] >= CAPACITY_TARGET),
        )  # fmt: skip
        rep.row(
            "segments written",
            str(cap["segments"]),
            f"{cap['bytes'] / cap['records']:.0f} bytes per record (zstd)",
        )

        rep.section("Serving p99 with and without the log (1 worker, logistic regression)")
        runs = latency(rep, tmp, args)
        rep.data["latency"] = runs
        best = {k: min(r["p99"] for r in v) for k, v in runs.items()}
        for key, rounds in runs.items():
            p50 = min(r["p50"] for r in rounds) * 1000
            tput = max(r["throughput"] for r in rounds)
            errors = sum(r["errors"] for r in rounds)
            rep.row(
                f"{key}: p50 / best p99 at c=1",
                f"{p50:.2f} / {best[key] * 1000:.2f} ms",
                f"{tput:,.0f} req/s at c=16; {errors} errors",
            )
        raised = best["logged"] / best["unlogged"] - 1
        rep.row(
            "p99 raised by the log",
            f"{raised * 100:+.1f} %",
            rep.target("p99_raised", f"<= {P99_SLACK:.0%}", raised, raised <= P99_SLACK),
        )
    rep.finish("Prediction log benchmark", t_start, load0, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
