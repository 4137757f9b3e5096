"""``jupyter handoff demo``: the whole path once, in a real kernel, on a fresh machine."""

from __future__ import annotations

import json
import time
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


def _get(info: dict, path: str) -> dict:
    req = urllib.request.Request(
        info["url"] + path, headers={"Authorization": f"token {info['token']}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def run_demo(notebook: str | None = None) -> int:
    import nbformat
    from nbclient import NotebookClient

    path = _find_notebook(notebook)
    info = runtime.read()
    if not (info and runtime.healthy(info["url"])):
        info = runtime.start_detached()
        print(f"Started the agent at {info['url']} (pid {info['pid']}).")
    else:
        print(f"Using the agent at {info['url']}.")
    print(f"Running {path} in a real kernel…")
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    out = Path(info["home"]) / "demo" / "quickstart.executed.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    print(f"Notebook ran in {time.perf_counter() - t0:.1f} s; executed copy: {out}")

    latest = _get(info, f"/api/v1/models/{DEMO_MODEL}/versions?limit=1")["versions"][0]
    deadline = time.monotonic() + 120
    while True:
        version = _get(info, f"/api/v1/models/{DEMO_MODEL}/versions/{latest['number']}")
        if version["status"] not in ("checking", "pending") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print()
    print(f"Created {DEMO_MODEL}:{version['number']}  status={version['status']}")
    print(f"  bundle  sha256:{version['digest']}")
    for c in version["checks"]:
        print(f"  check   {c['name']:<16} {c['status']:<6} {c['message'] or ''}")
    print()
    print("Where to look:")
    print(f"  API      {info['url']}/api/v1/models/{DEMO_MODEL}/versions/{version['number']}")
    print("  token    `jupyter handoff status`")
    print(f"  registry {info['home']}/registry.db   blobs {info['home']}/blobs")
    print("  verify   `jupyter handoff fsck`")
    return 0 if version["status"] == "passed" else 1
