"""bench/central.py --quick, end to end on SQLite plus files: real central processes, real
sender processes, a real kill -9. Asserts what must hold whatever the machine's speed: every
acknowledged delivery is at central exactly once, and the results file has its stable keys.
No wall-clock thresholds: the throughput and latency targets are the benchmark's business."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "central.py"


def test_quick_run_loses_and_duplicates_nothing_even_under_kill_9(tmp_path):
    out = tmp_path / "central.json"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--skip-mlflow", "--out", str(out),
         "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(out.read_text())

    sys.path.insert(0, str(BENCH.parent))
    try:
        from central import PHASE_KEYS, TARGET_KEYS
    finally:
        sys.path.remove(str(BENCH.parent))
    assert set(TARGET_KEYS) <= set(data["targets"])
    assert set(data["phases"]) == {"steady", "kill"}
    for name, phase in data["phases"].items():
        assert set(PHASE_KEYS) <= set(phase), name
        assert phase["expected"] == phase["agents"] * phase["pushes"] > 0
        assert phase["acked"] == phase["expected"], (name, phase["errors_seen"])
        assert (phase["lost"], phase["duplicated"], phase["ack_mismatch"]) == (0, 0, 0), name
        assert phase["unacked_applied"] == 0, name
        # Central takes the stage in the same transaction as the record: even a kill -9
        # mid-load leaves no version in `received`.
        assert phase["not_validated"] == 0, (name, phase["stages"])
    kill = data["phases"]["kill"]["kill"]
    assert kill["restarted"] and 0 < kill["at_done"] < data["phases"]["kill"]["expected"]
    assert data["targets"]["lost_under_kill"]["measured"] == 0
    assert data["targets"]["duplicated_under_kill"]["measured"] == 0
    assert data["listing"]["versions"] == 2000 and data["listing"]["page_p50_s"] > 0
    assert len(data["summary"]) == 4
    assert data["audit_verify"].startswith("audit: OK"), data["audit_verify"]
    assert not list(tmp_path.glob("handoff-central-bench-*")), "temp dir left behind"
