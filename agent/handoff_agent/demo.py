"""``jupyter handoff demo``: the whole path once, in a real kernel, on a fresh machine.

Starts the embedded central and a local agent, runs the quickstart notebook, waits for the
checks and the hand-off, then signs the version off as a reviewer, as IT would.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from . import runtime, tokens
from .registry import Registry

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


def _wait(fn, what: str, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.5)
    raise SystemExit(f"Gave up waiting for {what} after {timeout:.0f} s.")


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
    _wait(
        lambda: _call(local, vpath).get("stage") in ("validated", "rejected"),
        "central to validate the version",
    )
    remote = _call(local, vpath)["forwards"][0]["remote"]
    registry = Registry(Path(central["home"]) / "registry.db")
    try:
        reviewer = tokens.create(registry.db, "demo-reviewer", ["reviewer"], actor="demo")
    finally:
        registry.close()
    cpath = f"/api/v1/models/{remote['name']}/versions/{remote['version']}"
    _call(
        central,
        cpath + "/signoffs",
        {"decision": "approve", "comment": "demo sign-off"},
        token=reviewer,
    )
    _wait(lambda: _call(local, vpath).get("stage") == "approved", "the stage to flow back")
    for s in _call(local, vpath)["stages"]:
        print(f"  stage  {s['stage']:<10} by {s['by']:<14} {s['since'][:19]}")

    print("\nWhere to look:")
    print(f"  report   jupyter handoff report {DEMO_MODEL}:{number} --open")
    print(f"  local    {local['url']}{vpath}   (token: jupyter handoff status)")
    print(f"  central  {central['url']}{cpath}   (home {central['home']})")
    print("  verify   jupyter handoff fsck   and   jupyter handoff audit verify")
    return 0
