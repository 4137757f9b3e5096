"""Handoff benchmark: evaluating one daily monitoring window of 1M predictions x 30 features.

A benchmark, not a test. It prints the time of each part against the issue's budget (≤ 5 s on
2 cores for drift, performance and the label-free estimate):

  1. reading the window's log segments, written by the server's own writer
     (``serving.predlog.to_parquet``: inputs and outputs as ``in:``/``out:`` list columns), and
     flattening them into one row per prediction (``monitor.frames.rows``). On this 2-core
     machine (2026-12-01, others' jobs running): 2.9 s at 1M rows (load 2), 0.74 s at 200k;
     the same 200k window in the JSON-text segments the log wrote before: 4.0-8.9 s;
  2. input drift of 30 features (PSI, KS, chi² with unseen categories) against a reference of
     100k rows, prediction drift, labelled performance with its bootstrap CI, and CBPE.

Side by side, in the same run and on the same window: Evidently's ``DataDriftPreset`` (input
drift of the same 30 features against the same reference). Evidently is a 1 GB install (81
packages, BUILD-NOTES), so it lives in a venv of its own, never in Handoff's: pass its Python
with ``--evidently-python`` (or ``HANDOFF_EVIDENTLY_PYTHON``); without one the row says so.

    python bench/monitor.py                # 1,000,000 rows
    python bench/monitor.py --rows 200000  # quicker
    python -m venv /tmp/evi && /tmp/evi/bin/pip install evidently pyarrow "pandas<3"
    python bench/monitor.py --evidently-python /tmp/evi/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from handoff_agent.monitor import frames, metrics
from handoff_agent.monitor_policy import MonitorPolicy
from handoff_agent.serving import predlog

BUDGET_S = 5.0
# Run by Evidently's own Python: the drift preset on the two Parquet files, timed inside.
EVIDENTLY = """
import json, sys, time
import pandas as pd
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
t0 = time.perf_counter()
try:  # evidently >= 0.7
    from evidently import Report
    from evidently.presets import DataDriftPreset
    result = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref).dict()
except ImportError:  # the legacy API
    from evidently.report import Report
    from evidently.metric_preset import DataDriftPreset
    report = Report(metrics=[DataDriftPreset()])
    report.run(reference_data=ref, current_data=cur)
    result = report.as_dict()
took = time.perf_counter() - t0
import evidently
print(json.dumps({"seconds": took, "version": evidently.__version__}))
"""


def evidently(python: str, reference: pd.DataFrame, current: pd.DataFrame, feats) -> dict:
    """Seconds Evidently's DataDriftPreset takes on the window (files read untimed)."""
    with tempfile.TemporaryDirectory(prefix="handoff-bench-evidently-") as d:
        ref, cur = Path(d) / "reference.parquet", Path(d) / "current.parquet"
        reference[feats].to_parquet(ref)
        current[feats].to_parquet(cur)
        out = subprocess.run(
            [python, "-c", EVIDENTLY, str(ref), str(cur)],
            capture_output=True,
            text=True,
            timeout=3600,
        )
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def window(rng, n: int, shift: float = 0.0) -> pd.DataFrame:
    cols = {f"x{i}": rng.normal(shift if i < 5 else 0.0, 1, n) for i in range(25)}
    cols.update({f"c{i}": rng.choice(list("abcdef"), n) for i in range(5)})
    frame = pd.DataFrame(cols)
    score = 1 / (1 + np.exp(-(frame["x0"] - frame["x1"]).to_numpy()))
    frame["prediction"] = (score > 0.5).astype(int)
    frame["score"] = score
    frame["label"] = (rng.uniform(0, 1, n) < score).astype(int)
    return frame


def as_segments(frame: pd.DataFrame, rows: int = 50_000) -> list[bytes]:
    """The window as the model server logs it: one record per request (one row, inputs as
    ``{feature: [value]}``, a classifier's outputs), written by ``predlog.to_parquet`` into
    segments of ``rows`` records (``c.Serving.log_segment_rows``' default)."""
    feats = [c for c in frame.columns if c not in frames.RESERVED]
    values = {c: frame[c].tolist() for c in feats}
    preds, s = frame["prediction"].tolist(), frame["score"].tolist()
    records = [
        {
            "request_id": f"r{i}",
            "model": "bench",
            "version": 1,
            "slot": "production",
            "time": float(i),
            "latency_ms": 1.0,
            "status": 200,
            "inputs": {c: [values[c][i]] for c in feats},
            "outputs": {"predict": [preds[i]], "predict_proba": [[1 - s[i], s[i]]]},
        }
        for i in range(len(frame))
    ]
    return [predlog.to_parquet(records[i : i + rows]) for i in range(0, len(records), rows)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument(
        "--evidently-python",
        default=os.environ.get("HANDOFF_EVIDENTLY_PYTHON"),
        help="the Python of a venv with evidently installed (run side by side)",
    )
    ap.add_argument(
        "--evidently-rows",
        type=int,
        default=100_000,
        help="rows of the same window Evidently gets (it took 366 s on 100k rows here)",
    )
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    policy = MonitorPolicy()
    reference = window(rng, 100_000)
    current = window(rng, args.rows, shift=0.3)
    segments = as_segments(current)

    t0 = time.perf_counter()  # what MonitorService reads: the window's segments, then rows
    log = pd.concat([predlog.frame_of(data) for data in segments], ignore_index=True)
    _requests, rows = frames.rows(log)
    t_parse = time.perf_counter() - t0

    t0 = time.perf_counter()
    feats = [c for c in reference.columns if c not in frames.RESERVED]
    ref = metrics.reference_of(reference, feats, policy)
    t_ref = time.perf_counter() - t0

    rows["label"] = current["label"].to_numpy()  # the labels, joined by request id
    t0 = time.perf_counter()
    drift = metrics.input_drift(ref, rows, policy)
    t_drift = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics.prediction_drift(ref, rows, policy)
    perf = metrics.performance(rows, ref, policy)
    t_perf = time.perf_counter() - t0
    t0 = time.perf_counter()
    est = metrics.cbpe(rows, ref, policy)
    t_cbpe = time.perf_counter() - t0

    compute = t_drift + t_perf + t_cbpe
    print(f"window: {args.rows:,} predictions x {len(feats)} features")
    print(f"  read + flatten the log    {t_parse:7.2f} s  ({len(segments)} segments)")
    print(f"  reference (100k rows)     {t_ref:7.2f} s  (once per reference, cached)")
    print(f"  input drift               {t_drift:7.2f} s  ({len(drift['drifted'])} drifted)")
    print(f"  prediction drift + perf   {t_perf:7.2f} s  (accuracy {perf['value']:.3f})")
    print(f"  CBPE                      {t_cbpe:7.2f} s  (estimate {est['estimate']:.3f})")
    print(
        f"  evaluation (drift, performance, CBPE): {compute:.2f} s = "
        f"{compute / BUDGET_S:.2f} x the {BUDGET_S:.0f} s budget"
    )
    print(
        f"  with parsing: {compute + t_parse:.2f} s = "
        f"{(compute + t_parse) / BUDGET_S:.2f} x the budget"
    )
    if not args.evidently_python:
        print("  Evidently DataDriftPreset: not run (pass --evidently-python)")
        return
    n = min(args.evidently_rows, args.rows)
    theirs = evidently(args.evidently_python, reference, current.head(n), feats)
    if "error" in theirs:
        print(f"  Evidently DataDriftPreset: failed ({theirs['error']})")
        return
    # per row, as Evidently may get fewer rows of the window than Handoff did
    ratio = (t_drift / args.rows) / (theirs["seconds"] / n)
    print(
        f"  Evidently {theirs['version']} DataDriftPreset (input drift only) on {n:,} rows of the "
        f"same window: {theirs['seconds']:.2f} s; Handoff's input drift per row: "
        f"{ratio:.4f}x its time"
    )


if __name__ == "__main__":
    main()
