"""Serving benchmark, the guardrails' row: time from an alarm to rolled back, end to end.

A local agent and a central one on loopback (real processes, sandboxed serving workers).
churn:1 serves in production; each round pushes a version that fails on an input it never saw,
signs it to canary, and sends that input until the canary fails one (the alarm condition, an
error rate above ``max_error_rate``). It then times, from that failed answer:

- until central shows the version ``rollback`` (the stage, audit rows and events);
- until the same input is answered by production again (traffic moved back).

Target (issue 11): from alarm to rolled back <= 1 s. The guardrails tick every
``c.Serving.tick_seconds`` (``--tick``, default 1 s), so the expected time is about half a tick
plus the tick's own work.

    python bench/serve_rollback.py            # 3 rounds, about a minute
    python bench/serve_rollback.py --rounds 5 --tick 0.5

``measure_alarm_to_rollback(tmp, rounds, tick)`` is what bench/serve.py can call for its row.
Every process it starts is stopped in a finally block.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Agent, fmt_s, free_port, median  # noqa: E402

SECRET = "bench-rollback-secret-5Tq8Lr2VxWm9ZpK4nH7y"
POLICY = f"""
[intake]
trusted_types = []
revalidate = false

[intake.senders]
bench = "{SECRET}"

[stages.approved]
reviewer = 1
[stages.canary]
reviewer = 1
[stages.production]
reviewer = 1

[deploy]
canary_percent = 50
min_requests = 20
"""
UNSEEN = {"a": 0.5, "b": -1.0, "c": 2.0, "d": 0.0}


def wait_for(fn, timeout: float, what: str, every: float = 0.005):
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        got = fn()
        if got:
            return got
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


def call(url: str, token: str, method="GET", body=None) -> tuple[int, dict, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"token {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"{}")


class Site:
    """A central (policy above) and a local agent that forwards to it."""

    def __init__(self, tmp: Path, tick: float):
        from central import Central

        (tmp / "policy.toml").write_text(POLICY)
        self.central = Central(
            tmp / "central",
            tmp / "rt-central",
            tmp / "central.log",
            free_port(),
            SECRET + "-central-token",
            [
                "--policy",
                str(tmp / "policy.toml"),
                "--HandoffAgent.checks=[]",
                "--Serving.poll_interval=0.2",
                f"--Serving.tick_seconds={tick}",
                "--Validation.enabled=False",
            ],
        )
        self.local = Agent(
            tmp / "local",
            tmp / "rt-local",
            tmp / "local.log",
            (
                "--forward-to",
                "central",
                "--HandoffAgent.checks=[]",
                "--HandoffAgent.owner_name=bench",
                "--HandoffAgent.forward_backoff=0.1",
            ),
        )

    def start(self) -> Site:
        self.central.start(timeout=120)
        self.local.extra_args += [
            f"--CentralDestination.url={self.central.url}",
            f"--CentralDestination.secret={SECRET}",
            f"--CentralDestination.token={self.central.token}",
        ]
        self.local.start(timeout=120)
        info = json.loads(self.central.runtime_file.read_text())
        self.infer = info["serving_url"] + "/invocations?model=churn"
        return self

    def stop(self) -> None:
        self.local.stop()
        self.central.stop()

    def api(self, method: str, path: str, body=None):
        status, _, out = call(self.central.url + path, self.central.token, method, body)
        return status, out

    def predict(self, row: dict) -> tuple[int, str | None]:
        status, headers, _ = call(
            self.infer, self.central.token, "POST", {"dataframe_records": [row]}
        )
        return status, headers.get("X-Handoff-Model-Version")

    def stage(self, number: int) -> str | None:
        return self.api("GET", f"/api/v1/models/churn/versions/{number}")[1].get("stage")

    def push(self, model, X, y) -> int:
        from jupyter_handoff import api, config

        config._instance = config.Handoff(
            agent_url=self.local.url, token=self.local.token, auto_start=False
        )
        try:
            pushed = api.push(model, "churn", X=X, y=y).number
        finally:
            config._instance = None

        def validated():
            rows = self.api("GET", "/api/v1/models/churn/versions")[1].get("versions", [])
            return next(
                (r["number"] for r in rows if r["number"] >= pushed and r["stage"] == "validated"),
                None,
            )

        return wait_for(validated, 300, "validated at central", every=0.1)

    def sign(self, number: int, until: str) -> None:
        path = f"/api/v1/models/churn/versions/{number}/signoffs"
        while self.stage(number) != until:
            status, body = self.api("POST", path, {"decision": "approve", "comment": "ok"})
            if status != 201:
                raise RuntimeError(f"sign-off of churn:{number} refused: {body}")


def models():
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    y = (X["a"] + X["b"] > 0).astype(int)
    good = LogisticRegression().fit(X, y)

    def brittle(seed: int):
        ct = ColumnTransformer(
            [("a", OneHotEncoder(handle_unknown="error"), ["a"])], remainder="passthrough"
        )
        return Pipeline([("ct", ct), ("lr", LogisticRegression(C=1.0 + seed))]).fit(X, y)

    return X, y, good, brittle


def measure_alarm_to_rollback(tmp: Path, rounds: int = 3, tick: float = 1.0) -> dict:
    """Seconds from a canary's first failed answer to its stage ``rollback`` and to the
    input being answered by production, per round; medians and the worst."""
    X, y, good, brittle = models()
    site = Site(tmp, tick).start()
    stage_s, traffic_s = [], []
    try:
        site.sign(site.push(good, X, y), "production")
        wait_for(lambda: site.predict(X.iloc[0].to_dict())[0] == 200, 120, "production")
        for i in range(rounds):
            number = site.push(brittle(i), X, y)
            site.sign(number, "canary")
            wait_for(lambda: site.predict(UNSEEN)[0] == 422, 120, "a failed canary answer")
            t0 = time.perf_counter()
            wait_for(lambda: site.stage(number) == "rollback", 60, "rolled back")  # noqa: B023
            stage_s.append(time.perf_counter() - t0)
            wait_for(lambda: site.predict(UNSEEN) == (200, "1"), 60, "production answers")
            traffic_s.append(time.perf_counter() - t0)
    finally:
        site.stop()
    return {
        "tick_seconds": tick,
        "stage_s": stage_s,
        "traffic_s": traffic_s,
        "stage_median_s": median(stage_s),
        "traffic_median_s": median(traffic_s),
        "worst_s": max(traffic_s),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tick", type=float, default=1.0, help="c.Serving.tick_seconds")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="handoff-rollback-") as tmp:
        d = measure_alarm_to_rollback(Path(tmp), args.rounds, args.tick)
    ok = d["worst_s"] <= 1.0
    print(f"\n== Handoff: from alarm to rolled back ({args.rounds} rounds, tick {args.tick} s)")
    print(f"   {'alarm -> stage rollback (median)':<46} {fmt_s(d['stage_median_s']):>14}")
    print(f"   {'alarm -> production answers (median)':<46} {fmt_s(d['traffic_median_s']):>14}")
    print(
        f"   {'alarm -> production answers (worst)':<46} {fmt_s(d['worst_s']):>14}  "
        f"target <= 1 s: {'MET' if ok else 'MISSED'}"
    )
    print(json.dumps(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
