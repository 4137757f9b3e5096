"""``jupyter handoff demo``: the whole path once, in a real kernel, on a fresh machine.

Starts the embedded central and a local agent, runs the quickstart notebook, waits for the
checks and the hand-off, then signs the version off as a reviewer, as IT would. It follows the
outbox as well as the stage, so a refused delivery ends it at once with the reason (exit 1).
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


def _agent(role: str) -> dict:
    info = runtime.read(role)
    if info and runtime.healthy(info["url"]):
        print(f"Using the {role} agent at {info['url']}.")
        return info
    info = runtime.start_detached(role=role)
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

    print("\nWhere to look:")
    print(f"  report   jupyter handoff report {DEMO_MODEL}:{number} --open")
    print(f"  local    {local['url']}{vpath}   (token: jupyter handoff status)")
    print(f"  central  {central['url']}{cpath}   (home {central['home']})")
    print("  verify   jupyter handoff fsck   and   jupyter handoff audit verify")
    return 0
