"""What README command 1 must show, checked on its output and on the central it leaves
running: a canary, the split it observed, a promotion after a clean bake, and the guardrails'
automatic rollback of a degraded version, with production traffic back on the good one.

    python .ci/check_demo.py FIRST_RUN_LOG JUPYTER_RUNTIME_DIR

Runs in the first-run venv (the standard library only); exit 1 with what is missing."""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from pathlib import Path


def get(info: dict, path: str) -> dict:
    req = urllib.request.Request(
        info["url"] + path, headers={"Authorization": f"token {info['token']}"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def problems(out: str, central: dict) -> list[str]:
    found = []
    split = re.search(r"observed split churn:(\d+) (\d+)%, churn:(\d+) (\d+)%", out)
    if not split:
        return ["no observed split"]
    shares = {int(split[1]): int(split[2]), int(split[3]): int(split[4])}
    good = max(shares)
    if not 10 <= shares[good] <= 50:  # 200 requests at 30 %: far from both ends
        found.append(f"the canary's observed share {shares[good]}% is far from its 30%")
    for line in (
        f"promoted: churn:{good} serves 100%",
        "automatic rollback by guardrails: Canary error rate",
        f"traffic back: 50/50 requests answered by churn:{good}",
        "canary, split, promotion and an automatic rollback all happened",
    ):
        if line not in out:
            found.append(f"no line {line!r}")
    versions = {v["number"]: v for v in get(central, "/api/v1/models/churn/versions")["versions"]}
    bad = get(central, f"/api/v1/models/churn/versions/{max(versions)}")
    if max(versions) != good + 1 or bad["stage"] != "rollback":
        found.append(f"churn:{max(versions)} is {bad['stage']}, not rolled back")
    elif bad["stages"][-1]["by"] != "guardrails":
        found.append(f"churn:{max(versions)} was rolled back by {bad['stages'][-1]['by']}")
    slots = {s["slot"]: s for s in get(central, "/api/v1/models/churn/deployment")["slots"]}
    if "canary" in slots:
        found.append("a canary still runs")
    production = slots.get("production") or {}
    if (production.get("version"), production.get("traffic")) != (good, 100.0):
        found.append(f"production is {production}, not churn:{good} at 100%")
    if versions[good]["stage"] != "production":
        found.append(f"churn:{good} is {versions[good]['stage']}")
    return found


def main() -> int:
    log, runtime_dir = Path(sys.argv[1]), Path(sys.argv[2])
    central = json.loads((runtime_dir / "handoff-central.json").read_text())
    found = problems(log.read_text(errors="replace"), central)
    for p in found:
        print(f"README command 1: {p}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
