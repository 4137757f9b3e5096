"""A local agent and a central one on loopback, a model pushed through them, and an HTTP
client for the model server."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from support import RunningAgent, forwarding_args, push_model, until

SECRET = "serving-secret-3kT9qLm2VxZp7RwY8nB4xQ"  # 128+ bits, or central refuses to start

POLICY = f"""
[intake]
trusted_types = []
revalidate = false

[intake.senders]
alice = "{SECRET}"

[stages.approved]
reviewer = 1
[stages.canary]
reviewer = 1
[stages.production]
reviewer = 1

[deploy]
canary_percent = 30
shadow = true
shadow_gate = false
# This module's second version differs on purpose (traffic, not guardrails, is tested with
# it): no latency or prediction-shift alarm, and a bake of its first 20 requests.
min_requests = 20
bake_seconds = 0
p99_slack_ms = 1000
max_psi = 1000
"""


def start_pair(
    tmp: Path, serving_args=(), policy_text: str = POLICY, local_args=(), central_checks="[]"
):
    """(local, central) on loopback, central with ``policy_text``; ``serving_args`` go to
    central, ``local_args`` to the local agent; central runs ``central_checks`` (a JSON list:
    a list trait given twice on a command line takes both values)."""
    policy = tmp / "policy.toml"
    policy.write_text(policy_text)
    central = RunningAgent(
        tmp / "central",
        tmp / "rt-central",
        [
            "--role",
            "central",
            "--policy",
            str(policy),
            f"--HandoffAgent.checks={central_checks}",
            "--Serving.poll_interval=0.2",
            *serving_args,
        ],
    )
    central.start()
    local = RunningAgent(
        tmp / "local",
        tmp / "rt-local",
        [
            "--HandoffAgent.checks=[]",
            *forwarding_args(central, SECRET, backoff_cap=0.5),
            *local_args,
        ],
    )
    local.start()
    return local, central


def serving_url(central: RunningAgent) -> str:
    return json.loads(central.runtime_file.read_text())["serving_url"]


def central_stage(central: RunningAgent, name: str, number: int) -> str | None:
    return central.request("GET", f"/api/v1/models/{name}/versions/{number}")[1].get("stage")


def push_to_central(local, central, model, name: str, X, y) -> int:
    """Push through the notebook API to the local agent; wait until central validated it."""
    v = push_model(local, model, name, X=X, y=y)
    number = until(
        lambda: next(
            (
                r["number"]
                for r in central.request("GET", f"/api/v1/models/{name}/versions")[1].get(
                    "versions", []
                )
                if r["digest"] and r.get("stage") == "validated" and r["number"] >= v.number
            ),
            None,
        ),
        timeout=120,
        what=f"{name} validated at central",
    )
    return number


def sign(central, name: str, number: int, until_stage: str) -> None:
    path = f"/api/v1/models/{name}/versions/{number}/signoffs"
    while central_stage(central, name, number) != until_stage:
        status, body = central.request("POST", path, {"decision": "approve", "comment": "ok"})
        assert status == 201, body


class Client:
    """Keep-alive HTTP to the model server (one connection per thread)."""

    def __init__(self, url: str, token: str):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port, self.token = parsed.hostname, parsed.port, token
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        return conn

    def call(self, method, path, body=None, headers=None, token=True, raw=None):
        h = {"Authorization": f"token {self.token if token is True else token}"} if token else {}
        h.update(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        stale = (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected)
        for attempt in (1, 2):  # a refused request may close the kept-alive connection
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=h)
                resp = conn.getresponse()
                payload = resp.read()
                break
            except stale:
                self._local.conn = None
                conn.close()
                if attempt == 2:
                    raise
            except (OSError, http.client.HTTPException):
                self._local.conn = None
                conn.close()
                raise
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = payload
        return resp.status, resp.headers, parsed  # case-insensitive names

    def invocations(self, records: list[dict], model="churn", **headers):
        return self.call(
            "POST", f"/invocations?model={model}", {"dataframe_records": records}, headers
        )


class Load:
    """Background clients sending one-row requests until stopped; counts every outcome."""

    def __init__(self, client: Client, row: dict, threads: int = 3):
        self.client, self.row = client, row
        self.outcomes: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        while not self._stop.is_set():
            try:
                status, headers, _ = self.client.invocations([self.row])
                self.outcomes.append((status, headers.get("X-Handoff-Model-Version")))
            except OSError as e:
                self.outcomes.append((0, repr(e)))

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def failed(self) -> list:
        return [o for o in self.outcomes if o[0] != 200]

    def versions(self) -> set:
        return {o[1] for o in self.outcomes if o[0] == 200}


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (bubblewrap puts the worker's Python below its own)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def get_bytes(agent: RunningAgent, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(agent.host, agent.port, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": f"token {agent.token}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def status_json(central: RunningAgent) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "handoff_agent", "status", "--json", "--role", "central"],
        env=central.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout)


# Daily windows only, judged on 50 rows, so one imported day closes a window that can alert.
MONITOR_DAILY = """
[monitor]
daily = true
monthly = false
rolling_minutes = 0
min_samples = 50
every_seconds = 86400
"""


def import_day(
    central: RunningAgent, model, frame, day: float, path: Path, rng, name: str = "churn"
) -> None:
    """One day of ``frame``'s traffic (predictions and scores by ``model``) imported into
    central's prediction log for ``name``, at times drawn by ``rng`` over the day from
    ``day``."""
    import numpy as np

    frame.assign(
        time=day + np.sort(rng.uniform(0, 86400, len(frame))),
        prediction=model.predict(frame),
        score=model.predict_proba(frame)[:, 1],
    ).to_parquet(path)
    out = central.cli("monitor", "import", name, str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def run_on_a_drifted_day(
    central: RunningAgent, model, X, y, tmp: Path, name: str = "churn", days_ago: int = 1
) -> dict:
    """``name``'s reference (X with ``model``'s answers and y), then the traffic of the UTC
    day ``days_ago`` (yesterday: a closed daily window) shifted by 3 standard deviations, and
    central's monitor run: its answer."""
    import numpy as np
    import pandas as pd

    ref = X.assign(prediction=model.predict(X), score=model.predict_proba(X)[:, 1], label=y)
    ref.to_parquet(tmp / "ref.parquet")
    out = central.cli("monitor", "import", name, str(tmp / "ref.parquet"), "--reference")
    assert out.returncode == 0, out.stdout + out.stderr
    rng = np.random.default_rng(1)
    day = (time.time() // 86400 - days_ago) * 86400
    drifted = pd.DataFrame(rng.normal(3, 1, size=(300, X.shape[1])), columns=list(X.columns))
    import_day(central, model, drifted, day, tmp / "log.parquet", rng, name)
    status, body = central.request("POST", f"/api/v1/models/{name}/monitor/run", {})
    assert status == 200, body
    return body
