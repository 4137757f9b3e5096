"""Handoff benchmark: what the guardrails cost the serving hot path and each tick.

A benchmark, not a test. It prints ratios against the budgets the issues set:

  1. ``RollingStats.record`` per request (latency, one class, one score), against the 0.5 ms
     routing-and-logging budget (DESIGN.md) and a bare ``deque.append`` (what a plain list
     of recent latencies costs);
  2. merging the slices of a canary and its production over a 10-minute bake, and
     ``evaluate`` on them: one guardrail tick, against the 1 s alarm-to-rolled-back target;
  3. ``drain`` + JSON + ``absorb`` of one worker's second of traffic (the cross-process hop).

    python bench/guardrails.py            # about 10 s
    python bench/guardrails.py --quick
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import time
import timeit

from handoff_agent.deploy_policy import DeployPolicy
from handoff_agent.serving.guardrails import evaluate_slots
from handoff_agent.serving.stats import RollingStats, StatsBook


def per_call(stmt: str, env: dict, n: int) -> float:
    return min(timeit.repeat(stmt, globals=env, number=n, repeat=5)) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 20_000 if args.quick else 200_000
    rng = random.Random(0)

    r, d = RollingStats(), collections.deque(maxlen=4096)
    env = {"r": r, "d": d}
    record = per_call("r.record(1.0, 2.5, classes=(True,), scores=(0.42,))", env, n)
    append = per_call("d.append(2.5)", env, n)
    print(f"record per request      {record * 1e6:8.2f} µs")
    print(f"  / 0.5 ms budget       {record / 0.5e-3:8.2%}")
    print(f"  / deque.append        {record / append:8.1f}x")

    # a 10-minute bake at 200 req/s production, 10% canary, 10 s slices
    book = StatsBook(window_seconds=1200, slice_seconds=10)
    rate = 40 if args.quick else 200
    for t in range(600 * rate):
        now = t / rate
        slot, version = ("canary", 3) if t % 10 == 0 else ("production", 2)
        s = rng.random()
        book.get("churn", version, slot).record(
            now, rng.lognormvariate(1, 0.4), classes=(s > 0.5,), scores=(s,)
        )
    policy = DeployPolicy()
    env = {"book": book, "policy": policy, "evaluate_slots": evaluate_slots}
    tick = per_call(
        "evaluate_slots(book, 'churn', 3, 2, policy, now=600.0, started_at=0.0)", env, 20
    )
    print(f"guardrail tick          {tick * 1e3:8.2f} ms  ({600 * rate:,} requests in 60 slices)")
    print(f"  / 1 s alarm target    {tick / 1.0:8.2%}")

    worker, main_book = StatsBook(), StatsBook()
    for i in range(rate):
        worker.get("churn", 2, "production").record(1000 + i / rate, 2.0, scores=(0.3,))
    t0 = time.perf_counter()
    main_book.absorb(json.loads(json.dumps(worker.drain())))
    hop = time.perf_counter() - t0
    print(f"drain+json+absorb       {hop * 1e3:8.2f} ms  (one worker-second, {rate} requests)")


if __name__ == "__main__":
    main()
