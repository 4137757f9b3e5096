"""``jupyter handoff demo``: the whole path once, in a real kernel, on a fresh machine.

Starts the embedded central and a local agent, runs the quickstart notebook, waits for the
checks and the hand-off, then signs the version off as a reviewer, as IT would. It follows the
outbox as well as the stage, so a refused delivery ends it at once with the reason (exit 1).
Then it rolls out at central's model server: a canary with the split it observed, promotion after
the guardrails' clean bake, and a degraded version the guardrails roll back on their own.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import runtime

DEMO_MODEL = "churn"


def _find_notebook(given: str | None) -> Path:
    candidates = (
        [Path(given)]
        if given
        else [
            Path.cwd() / "examples" / "quickstart.ipynb",
            Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb",
        ]
    )
    for c in candidates:
        if c.is_file():
            return c
    raise SystemExit(
        "Cannot find examples/quickstart.ipynb. Run the demo from the repository root, "
        "or pass --notebook PATH."
    )


def _call(info: dict, path: str, body: dict | None = None, token: str | None = None) -> dict:
    req = urllib.request.Request(
        info["url"] + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Authorization": f"token {token or info['token']}",
            "Content-Type": "application/json",
        },
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


# The demo's own central policy: the embedded one with a short bake, so the whole rollout fits
# in a minute or two. The shipped defaults (deploy_policy.py) are untouched.
DEMO_DEPLOY = """
# Written by `jupyter handoff demo`: a short canary bake so the demo fits in a minute or two.
[deploy]
canary_percent = 30
min_requests = 30
bake_seconds = 3
# The demo's rollback is the error-rate guardrail's: a busy laptop's latency, or the score
# shift of a retrained model seen on 200 requests, must not stop its sound canary.
p99_slack_ms = 250
max_psi = 1.0

[deploy.loadtest]
requests = 100
"""


def _demo_policy() -> Path:
    from .homes import central_home
    from .pipeline import embedded_policy

    base = embedded_policy(central_home()).read_text()
    path = central_home() / "demo-policy.toml"
    path.write_text(base + ("" if "[deploy]" in base else DEMO_DEPLOY))
    path.chmod(0o600)
    return path


def _agent(role: str) -> dict:
    info = runtime.read(role)
    if info and runtime.healthy(info["url"]):
        print(f"Using the {role} agent at {info['url']}.")
        return info
    args = ("--policy", str(_demo_policy())) if role == "central" else ()
    info = runtime.start_detached(role=role, args=args)
    print(f"Started the {role} agent at {info['url']} (pid {info['pid']}, home {info['home']}).")
    return info


class DemoFailed(Exception):
    """The hand-off will not reach approved: the reason, and what to do about it."""

    def __init__(self, reason: str, todo: str):
        super().__init__(reason)
        self.reason, self.todo = reason, todo


def _wait(fn, what: str, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.5)
    raise SystemExit(f"Gave up waiting for {what} after {timeout:.0f} s.")


def _todo_for(error: str) -> str:
    missing = re.search(r"No module named '([^']+)'", error)
    if missing:
        return (
            f"The agents' Python cannot import {missing.group(1)}. Reinstall "
            "(`pip install -e .` installs everything central needs), stop the agents that "
            "still run without it (their pids are in handoff-local.json and "
            "handoff-central.json under `jupyter --runtime-dir`), then run "
            "`jupyter handoff demo` again."
        )
    return (
        "Fix the cause above (each agent's log, handoff-local.log and handoff-central.log, "
        "is under `jupyter --runtime-dir`), then run `jupyter handoff demo` again: it pushes "
        "a new version and hands that off."
    )


# The stages a version may be in while the demo waits for the next one; any other ends it.
PASSING = {"validated": (None, "", "received"), "approved": ("validated",)}


def _follow(local: dict, vpath: str, want: str, timeout: float = 180.0) -> dict:
    """Poll the version until central has it in stage `want`; its delivery row to central.

    Follows the outbox as well as the stage: a dead delivery (refused by central, or one that
    cannot be built) or a stage off the path ends the wait at once with the reason.
    """
    deadline = time.monotonic() + timeout
    while True:
        v = _call(local, vpath)
        row = next((f for f in v["forwards"] if f["destination"] == "central"), None)
        if row is None:  # outbox rows are written with the verdict: none now means none ever
            raise DemoFailed(
                f"The local agent did not hand the version to central (verdict {v['status']}).",
                "Versions go to c.HandoffAgent.forward_to when their verdict is in "
                "c.HandoffAgent.forward_on. Stop a local agent started with other settings "
                "and run the demo again.",
            )
        error = row.get("last_error") or ""
        if row["state"] == "dead":
            raise DemoFailed(f"Central did not take the version: {error}", _todo_for(error))
        stage = v.get("stage")
        if stage == want:
            return row
        if stage not in PASSING[want]:
            last = (v.get("stages") or [{}])[-1]
            raise DemoFailed(
                f"Central put the version in stage {stage!r}"
                + (f": {last['comment']}" if last.get("comment") else "."),
                "Central's version page and report say why; "
                f"`%mlops show {DEMO_MODEL}` shows the stage in the notebook.",
            )
        if time.monotonic() > deadline:
            if row["state"] != "delivered":
                raise DemoFailed(
                    f"The delivery to central is still being retried after {timeout:.0f} s "
                    f"({row['attempts']} attempts); last error: {error or 'none yet'}",
                    _todo_for(error),
                )
            raise DemoFailed(
                f"Central has the version in stage {stage or 'none'!r}, "
                f"not {want!r}, after {timeout:.0f} s.",
                _todo_for(""),
            )
        time.sleep(0.5)


def _sign_off(central: dict, cpath: str) -> None:
    try:
        _call(
            central,
            cpath + "/signoffs",
            {"decision": "approve", "comment": "demo sign-off"},
            token=_reviewer_token(central),
        )
    except urllib.error.HTTPError as e:
        err = json.loads(e.read() or b"{}").get("error", {})
        raise DemoFailed(
            f"Central refused the sign-off ({e.code}): {err.get('message', e.reason)}",
            err.get("hint") or _todo_for(""),
        ) from None


def _reviewer_token(central: dict) -> str:
    """A reviewer token at central, asked of central over HTTP with its admin token (the demo
    never opens central's database itself: it may be PostgreSQL, or another process's file)."""
    try:
        return _call(central, "/api/v1/tokens", {"user": "demo-reviewer", "roles": ["reviewer"]})[
            "token"
        ]
    except urllib.error.HTTPError as e:
        err = json.loads(e.read() or b"{}").get("error", {})
        raise DemoFailed(
            f"Cannot create a reviewer token at central ({e.code}): {err.get('message', e.reason)}",
            "Run `jupyter handoff token create --user demo-reviewer --role reviewer "
            "--agent-role central` to see why.",
        ) from None


def run_demo(notebook: str | None = None) -> int:
    import nbformat
    from nbclient import NotebookClient

    path = _find_notebook(notebook)
    central = _agent("central")
    local = _agent("local")
    print(f"Running {path} in a real kernel…")
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    out = Path(local["home"]) / "demo" / "quickstart.executed.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    print(f"Notebook ran in {time.perf_counter() - t0:.1f} s; executed copy: {out}")

    number = _call(local, f"/api/v1/models/{DEMO_MODEL}/versions?limit=1")["versions"][0]["number"]
    vpath = f"/api/v1/models/{DEMO_MODEL}/versions/{number}"
    version = _wait(
        lambda: (v := _call(local, vpath))["status"] not in ("checking",) and v, "the checks"
    )
    print(f"\n{DEMO_MODEL}:{number}  verdict={version['status']}  sha256:{version['digest'][:16]}…")
    for c in version["checks"]:
        print(f"  check  {c['name']:<15} {c['status']:<5} {(c['message'] or '')[:90]}")
    if version["status"] == "failed":
        print("The gate failed, so nothing was handed off. See the report for why.")
        return 1

    print("\nHanding off to central (signed delivery, converted to skops)…")
    try:
        remote = _follow(local, vpath, "validated")["remote"]
        cpath = f"/api/v1/models/{remote['name']}/versions/{remote['version']}"
        _sign_off(central, cpath)
        _follow(local, vpath, "approved")
    except DemoFailed as e:
        print(f"\nThe hand-off stopped. {e.reason}")
        print(f"What to do: {e.todo}")
        return 1
    for s in _call(local, vpath)["stages"]:
        print(f"  stage  {s['stage']:<10} by {s['by']:<14} {s['since'][:19]}")
    print(f"\n{DEMO_MODEL}:{number} is approved at central.")
    try:
        _rollout(central, local, int(remote["version"]))
    except DemoFailed as e:
        print(f"\nThe rollout stopped. {e.reason}")
        print(f"What to do: {e.todo or _todo_for('')}")
        return 1
    print(f"\n{DEMO_MODEL}: canary, split, promotion and an automatic rollback all happened.")

    print("\nWhere to look:")
    print(f"  report   jupyter handoff report {DEMO_MODEL}:{number} --open")
    print(f"  local    {local['url']}{vpath}   (token: jupyter handoff status)")
    print(f"  central  {central['url']}{cpath}   (home {central['home']})")
    print("  verify   jupyter handoff fsck   and   jupyter handoff audit verify")
    return 0


# -- past approval: canary, split, promotion, and a guardrail rollback -------------------


def _eval_sample():
    """The quickstart's data, rebuilt (same seeds): its evaluation sample is the traffic."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    X, y = make_classification(n_samples=4000, n_features=8, n_informative=5, random_state=0)
    cols = ["tenure", "monthly_charges", "support_calls", "usage"]
    cols += ["discount", "late_payments", "devices", "age"]
    X = pd.DataFrame(X, columns=cols)
    X["gender"] = np.random.default_rng(0).integers(0, 2, len(X))
    return train_test_split(X, pd.Series(y, name="churned"), test_size=0.25, random_state=0)


def _brittle(X, y):
    """The degraded version: a trusted pipeline whose one-hot of ``tenure`` refuses values it
    never saw. It passes the checks on the evaluation sample (it saw those) and fails on new
    customers."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    ct = ColumnTransformer(
        [("tenure", OneHotEncoder(handle_unknown="error"), ["tenure"])], remainder="passthrough"
    )
    forest = RandomForestClassifier(n_estimators=50, random_state=0)
    return Pipeline([("ct", ct), ("rf", forest)]).fit(X, y)


class _Rollout:
    """The rollout at central, told as a story: one line per step, with the time since start."""

    def __init__(self, central: dict, local: dict):
        self.central, self.local = central, local
        self.t0 = time.perf_counter()
        self.serving = central.get("serving_url")
        if not self.serving:
            raise DemoFailed(
                "Central runs no model server (no serving_url in its runtime file).",
                "Stop central (its pid is in handoff-central.json under `jupyter --runtime-dir`) "
                "and run the demo again: it starts central with its model server.",
            )
        self.reviewer = _reviewer_token(central)
        self.admin = self._token("demo-admin", "admin")

    def say(self, text: str) -> None:
        print(f"  [{time.perf_counter() - self.t0:5.1f} s] {text}")

    def _token(self, user: str, role: str) -> str:
        return _call(self.central, "/api/v1/tokens", {"user": user, "roles": [role]})["token"]

    def view(self) -> dict:
        return _call(self.central, f"/api/v1/models/{DEMO_MODEL}/deployment")

    def stage(self, number: int) -> dict:
        return _call(self.central, f"/api/v1/models/{DEMO_MODEL}/versions/{number}")

    def move(self, number: int, to: str) -> None:
        """Sign-offs at central through its API, a reviewer's then an admin's at each stage,
        until ``number`` is in stage ``to`` (what the policy asks of each stage)."""
        path = f"/api/v1/models/{DEMO_MODEL}/versions/{number}/signoffs"
        while (stage := self.stage(number)["stage"]) != to:
            for token in (self.reviewer, self.admin):
                try:
                    _call(self.central, path, {"decision": "approve", "comment": "demo"}, token)
                except urllib.error.HTTPError as e:
                    err = json.loads(e.read() or b"{}").get("error", {})
                    raise DemoFailed(
                        f"Central refused {DEMO_MODEL}:{number} for {to} ({e.code}): "
                        f"{err.get('message', e.reason)}",
                        err.get("hint") or _todo_for(""),
                    ) from None
                if self.stage(number)["stage"] != stage:
                    break
            else:
                raise DemoFailed(
                    f"{DEMO_MODEL}:{number} stayed {stage} after the demo's sign-offs.",
                    "Central's policy asks for more sign-offs than the demo gives (a reviewer "
                    "and an admin); sign off in the panel, or run the demo on a fresh central.",
                )

    def predict(self, rows: list[dict]) -> tuple[int, str | None, dict]:
        req = urllib.request.Request(
            f"{self.serving}/invocations?model={DEMO_MODEL}",
            data=json.dumps({"dataframe_records": rows}).encode(),
            headers={
                "Authorization": f"token {self.central['token']}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.headers.get("X-Handoff-Model-Version"), json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("X-Handoff-Model-Version"), json.loads(e.read() or b"{}")

    def traffic(self, rows: list[dict]) -> dict[str, int]:
        """One request per row; the count of answers per serving version (failures as 'error')."""
        split: dict[str, int] = {}
        for row in rows:
            status, version, _ = self.predict([row])
            key = version if status == 200 else "error"
            split[key] = split.get(key, 0) + 1
        return split

    def wait(self, fn, what: str, timeout: float, todo: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = fn()
            if got:
                return got
            time.sleep(0.2)
        raise DemoFailed(f"Gave up waiting for {what} after {timeout:.0f} s.", todo)

    def serving_on(self, slot: str, number: int) -> None:
        self.wait(
            lambda: any(s["slot"] == slot and s["version"] == number for s in self.view()["slots"]),
            f"{DEMO_MODEL}:{number} in the {slot} slot",
            60,
            _todo_for(""),
        )

    def push(self, model, message: str, X, y) -> int:
        """Push from here as the notebook would, then follow it to validated at central."""
        from jupyter_handoff import api, config

        config._instance = config.Handoff(
            agent_url=self.local["url"], token=self.local["token"], auto_start=False
        )
        try:
            v = api.push(model, DEMO_MODEL, X=X, y=y, message=message)
        finally:
            config._instance = None
        vpath = f"/api/v1/models/{DEMO_MODEL}/versions/{v.number}"
        _wait(lambda: _call(self.local, vpath)["status"] != "checking", "the checks")
        remote = _follow(self.local, vpath, "validated")["remote"]
        return int(remote["version"])


def _rollout(central: dict, local: dict, good: int) -> None:
    X_train, X_test, y_train, y_test = _eval_sample()
    rows = X_test.to_dict("records")
    r = _Rollout(central, local)
    settings = _call(central, "/api/v1/meta").get("deploy", {}).get("policy", {})
    bake = float(settings.get("bake_seconds", {}).get("value", 0))
    if bake > 60:
        raise DemoFailed(
            f"Central's policy bakes a canary for {bake:g} s ([deploy] bake_seconds), too long "
            "for a demo.",
            "Stop central (its pid is in handoff-central.json under `jupyter --runtime-dir`) and "
            "run the demo again: it starts central with its own short bake (demo-policy.toml).",
        )
    print(f"\nRolling out at central (model server {r.serving}):")

    prod = next((s for s in r.view()["slots"] if s["slot"] == "production"), None)
    if prod is None:  # a first version has no production to bake against
        r.move(good, "production")
        r.serving_on("production", good)
        r.say(f"{DEMO_MODEL}:{good} is the first production (no canary to bake against)")
        from sklearn.ensemble import RandomForestClassifier

        model = RandomForestClassifier(n_estimators=100, random_state=1).fit(X_train, y_train)
        cand = r.push(model, "retrained (demo)", X_test, y_test)
        r.say(f"pushed {DEMO_MODEL}:{cand} (retrained), validated at central")
        r.move(cand, "approved")
        base = good
    else:
        cand, base = good, int(prod["version"])

    r.move(cand, "canary")
    r.serving_on("canary", cand)
    share = next(s["traffic"] for s in r.view()["slots"] if s["slot"] == "canary")
    r.say(f"canary: {DEMO_MODEL}:{cand} takes {share:g}% of traffic, {DEMO_MODEL}:{base} the rest")

    # The slot is set at once; its workers load the version in the background. Measure after.
    r.wait(
        lambda: r.traffic(rows[:5]).get(str(cand)),
        f"{DEMO_MODEL}:{cand} answering as canary",
        60,
        _todo_for(""),
    )
    split = r.traffic(rows[:200])
    if split.get("error") or set(split) != {str(base), str(cand)}:
        raise DemoFailed(f"The model server did not split the traffic as set: {split}.", "")
    seen = ", ".join(f"{DEMO_MODEL}:{k} {100 * n / 200:.0f}%" for k, n in sorted(split.items()))
    r.say(f"sent 200 requests from the evaluation sample: observed split {seen}")

    def baked():
        r.traffic(rows[:20])
        v = r.stage(cand)
        if v["stage"] != "canary":
            raise DemoFailed(
                f"The guardrails moved the sound canary {DEMO_MODEL}:{cand} to {v['stage']}: "
                f"{v['stages'][-1]['comment']}",
                "Central's log (handoff-central.log under `jupyter --runtime-dir`) has the "
                "guardrails' readings.",
            )
        return r.view()["guardrails"]["canary"]["state"] == "promote_ready"

    r.wait(
        baked,
        "the canary's clean bake",
        120,
        _todo_for(""),
    )
    r.say(f"clean bake ({bake:g} s, no alarm): promotion allowed by the guardrails")
    r.move(cand, "production")
    r.wait(
        lambda: r.traffic(rows[:10]) == {str(cand): 10},
        f"{DEMO_MODEL}:{cand} taking all traffic",
        60,
        _todo_for(""),
    )
    r.say(f"promoted: {DEMO_MODEL}:{cand} serves 100% ({DEMO_MODEL}:{base} kept as rollback)")

    bad = r.push(_brittle(X_test, y_test), "degraded on purpose (demo)", X_test, y_test)
    r.say(f"pushed {DEMO_MODEL}:{bad}, degraded on purpose (fails on unseen tenure values)")
    r.move(bad, "approved")
    r.move(bad, "canary")
    r.serving_on("canary", bad)
    r.say(f"canary: {DEMO_MODEL}:{bad} takes {share:g}% of traffic")

    # New customers: the evaluation sample, tenure nudged to values no model was trained on
    new = [{**row, "tenure": row["tenure"] + 0.001} for row in rows]
    fresh = iter(new * 10)
    sent: dict[str, int] = {}

    def rolled_back():
        v = r.stage(bad)
        if v["stage"] == "rollback":
            return v
        for k, n in r.traffic([next(fresh) for _ in range(5)]).items():  # until they act
            sent[k] = sent.get(k, 0) + n
        return None

    rolled = r.wait(
        rolled_back,
        "the guardrails' rollback",
        60,
        "The guardrails raised no alarm; `jupyter handoff status --json` at central and "
        "handoff-central.log say why.",
    )
    failed = sent.get("error", 0)
    r.say(
        f"sent {sum(sent.values())} requests from new customers: {failed} failed on the "
        f"canary {DEMO_MODEL}:{bad}, {sent.get(str(cand), 0)} answered by {DEMO_MODEL}:{cand}"
    )
    reason = rolled["stages"][-1]["comment"]
    r.say(f"automatic rollback by {rolled['stages'][-1]['by']}: {reason}")
    # The routers take the rollback from the store on their next sync: give them a moment
    deadline = time.monotonic() + 30
    while (after := r.traffic(new[:50])) != {str(cand): 50} and time.monotonic() < deadline:
        time.sleep(0.5)
    if after != {str(cand): 50}:
        raise DemoFailed(
            f"Traffic is not back on {DEMO_MODEL}:{cand} after the rollback: {after}", ""
        )
    slots = {s["slot"]: s["traffic"] for s in r.view()["slots"]}
    r.say(
        f"traffic back: 50/50 requests answered by {DEMO_MODEL}:{cand} "
        f"(production {slots.get('production'):g}%, canary gone)"
    )
