"""Run a registered retraining notebook headless: ``python -m handoff_agent.watch.retrain``.

A process of its own (never the agent's): nbclient starts a kernel, the parameters go in a
cell injected after the one tagged ``parameters`` (papermill's convention) or first, and the
run stops at the timeout. The kernel sees ``HANDOFF_TRIGGERED_BY``, which ``%mlops push``
writes into the candidate's provenance, so the version it pushes names the change behind it.
The outcome is one JSON line on stdout: ``{"ok": true}`` or ``{"ok": false, "error": …}``.

It runs in a session of its own (the agent kills the group at the timeout), so a ``kill -9``
of the agent would leave it running, pushing a candidate for a trigger nobody waits for:
it stops, with its kernel, as soon as the agent that started it is gone, and the agent
marks the trigger ``interrupted`` and runs it again when it starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colours in a cell's traceback


def inject(nb, params: dict):
    import nbformat

    lines = ["# Parameters injected by the Handoff watch"]
    lines += [f"{k} = {v!r}" for k, v in params.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    at = next(
        (i + 1 for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])),
        0,
    )
    nb.cells.insert(at, cell)
    return nb


PARENT_POLL = 0.5  # seconds between looks at whether the agent is still there
_running: dict = {}  # the notebook client, once made: its kernel is stopped with this run


def _stop_with_parent(parent: int) -> None:
    """Exit once the process that started this one is gone (it is reparented), taking the
    kernel along: its process group (a session of its own, with what the notebook started)
    and its connection file."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    km = getattr(_running.get("client"), "km", None)
    pid = getattr(getattr(km, "provisioner", None), "pid", None)
    if pid:
        with contextlib.suppress(OSError):  # gone already
            os.killpg(pid, signal.SIGKILL)
    if km is not None:
        with contextlib.suppress(Exception):  # a file already gone: nothing else to tidy
            km.cleanup_connection_file()
    os._exit(3)


def run(path: str, params: dict, timeout: float) -> dict:
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = inject(nbformat.read(path, as_version=4), params)
    # what JupyterLab tells a kernel: the version it pushes names its notebook (lineage)
    os.environ["JPY_SESSION_NAME"] = str(Path(path).resolve())
    # the timeout is the whole run's: each cell may take what the cells before it left
    deadline = time.monotonic() + timeout
    client = NotebookClient(
        nb,
        timeout=timeout,
        timeout_func=lambda cell: max(deadline - time.monotonic(), 0.01),
        kernel_name="python3",
        resources={"metadata": {"path": str(Path(path).parent)}},
    )
    _running["client"] = client
    try:
        client.execute()
    except CellTimeoutError:
        return {"ok": False, "error": f"the notebook ran longer than {timeout:.0f} s"}
    except CellExecutionError as e:
        last = ANSI.sub("", str(e)).strip().splitlines()[-1]  # a traceback's colours
        return {"ok": False, "error": last[:500]}
    return {"ok": True}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m handoff_agent.watch.retrain")
    p.add_argument("notebook")
    p.add_argument("--params", default="{}")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args(argv)
    watcher = threading.Thread(target=_stop_with_parent, args=(os.getppid(),), daemon=True)
    watcher.start()
    out = run(args.notebook, json.loads(args.params), args.timeout)
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
