"""Pushes from a real kernel (nbclient), read back over HTTP from a real agent."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TRAIN = """
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.tree import DecisionTreeClassifier
X, y = make_classification(n_samples=300, n_features=4, random_state=1)
X = pd.DataFrame(X, columns=list("abcd"))
clf = DecisionTreeClassifier(random_state=0).fit(X, y)
"""


def execute(cells: list[str], monkeypatch, agent) -> nbformat.NotebookNode:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(agent.runtime_dir))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return nb


def wait_for_checks(agent, name: str, number: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = agent.request("GET", f"/api/v1/models/{name}/versions/{number}")[1]
        if body["status"] != "checking" or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_magic_and_python_api_from_a_kernel(agent, monkeypatch):
    nb = execute(
        [
            "%load_ext jupyter_handoff",
            TRAIN,
            "%mlops push clf --name tree --data X y -m 'from the magic'",
            "import jupyter_handoff\n"
            "v = jupyter_handoff.push(clf, name='tree', X=X.iloc[:100], y=y[:100],"
            " message='from python')\nprint(v.number)",
        ],
        monkeypatch,
        agent,
    )
    assert nb.cells[3].outputs[0]["text"].strip() == "2"
    versions = agent.request("GET", "/api/v1/models/tree/versions")[1]["versions"]
    assert [(v["number"], v["message"]) for v in versions] == [
        (2, "from python"),
        (1, "from the magic"),
    ]
    v1 = wait_for_checks(agent, "tree", 1)
    assert v1["status"] == "passed"
    assert v1["checks"][0]["name"] == "loads"
    assert v1["checks"][0]["result"]["metrics"]["task"] == "classification"
    assert v1["manifest"]["provenance"]["cell_hash"]
    assert v1["manifest"]["signature"]["columns"][0] == {"name": "a", "dtype": "float64"}


def test_model_defined_in_the_notebook_fails_clean_process_check(agent, monkeypatch):
    execute(
        [
            "%load_ext jupyter_handoff",
            TRAIN,
            "class Halver:\n"
            "    def __init__(self, inner): self.inner = inner\n"
            "    def predict(self, X): return self.inner.predict(X)\n"
            "wrapped = Halver(clf)",
            "%mlops push wrapped --name wrapped --data X y",
        ],
        monkeypatch,
        agent,
    )
    version = wait_for_checks(agent, "wrapped", 1)
    assert version["status"] == "failed"
    loads = version["checks"][0]
    assert loads["status"] == "fail"
    assert "Halver" in loads["message"]
    assert "defined in the notebook" in loads["message"]


def test_forcing_a_hand_off_says_what_happened(agent, monkeypatch):
    """A version that fails its checks goes to central only when asked; asking again
    changes nothing. Each answer is a sentence, not the API's JSON."""
    nb = execute(
        [
            "%load_ext jupyter_handoff",
            TRAIN,
            "class Halver:\n"  # defined in the notebook: it fails its checks
            "    def __init__(self, inner): self.inner = inner\n"
            "    def predict(self, X): return self.inner.predict(X)\n"
            "broken = Halver(clf)",
            "%mlops push broken --name broken",
            "%mlops forward broken:1 --to central",
            "%mlops forward broken:1 --to central",
        ],
        monkeypatch,
        agent,
    )
    said = ["".join(o.get("text", "") for o in cell.outputs) for cell in nb.cells[4:]]
    follow = "`%mlops show broken:1` follows its delivery.\n"
    assert said == [
        "broken:1 is queued for central; " + follow,
        "broken:1 already goes to central (queued or delivered); " + follow,
    ]


def test_a_saved_notebook_says_how_the_push_ended(agent, monkeypatch):
    """The push's output is rewritten once its checks are in, so the notebook saved and
    opened where no widget runs (GitHub, nbconvert) shows the verdict, not 'checking'."""
    nb = execute(
        [
            "%load_ext jupyter_handoff",
            TRAIN,
            "%mlops push clf --name tree --data X y",
            "import gc, time\n"
            "from jupyter_handoff.widgets.push import PushWidget\n"
            "(w,) = [o for o in gc.get_objects() if isinstance(o, PushWidget)]\n"
            "print('following', w.following)\n"
            "deadline = time.monotonic() + 90\n"
            "while not w.done and time.monotonic() < deadline:\n"
            "    time.sleep(0.1)\n"
            "time.sleep(2)  # the rewrite follows 'done' by one GET",
            # a headless run (nbconvert --execute) whose last cell waits: the kernel stops
            # right after it, and the push's output still says how it ended
            "%mlops push clf --name tree --data X y -m again",
            "_.wait();",
        ],
        monkeypatch,
        agent,
    )
    (again,) = [o for o in nb.cells[4].outputs if o["output_type"] == "display_data"]
    assert again["data"]["text/plain"].startswith("Version('tree', 2, status='passed')"), again
    assert "checking" not in again["data"]["text/html"]
    assert nb.cells[3].outputs[0]["text"] == "following True\n"  # shown while checking
    (shown,) = [o for o in nb.cells[2].outputs if o["output_type"] == "display_data"]
    status = wait_for_checks(agent, "tree", 1)["status"]
    assert status == "passed"
    assert shown["data"]["text/plain"].startswith(f"Version('tree', 1, status='{status}')")
    assert f">{status}</span>" in shown["data"]["text/html"]
    assert "checking" not in shown["data"]["text/plain"] + shown["data"]["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in shown["data"]


@pytest.mark.parametrize("fmt", ["skops"])
def test_skops_format(agent, monkeypatch, fmt):
    execute(
        [
            "%load_ext jupyter_handoff",
            TRAIN,
            f"%mlops push clf --name sk --data X y --format {fmt}",
        ],
        monkeypatch,
        agent,
    )
    version = wait_for_checks(agent, "sk", 1)
    assert version["serialization"] == "skops"
    assert version["status"] == "passed", version["checks"]


@pytest.fixture
def kernel(agent, monkeypatch):
    """A live kernel (its manager and client) that finds ``agent``, as JupyterLab holds one."""
    from jupyter_client.manager import start_new_kernel

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(agent.runtime_dir))
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_tab_completion_as_jupyterlab_asks(kernel):
    """A complete_request to a real kernel, as JupyterLab sends it on Tab: on a %mlops line
    only Handoff's candidates come back (not every builtin name), each replacing the part
    of the word it completes."""
    _, kc = kernel
    kc.execute_interactive(
        "%load_ext jupyter_handoff\n" + TRAIN + "import jupyter_handoff\n"
        "jupyter_handoff.push(clf, name='tree', X=X, y=y)\n"
        "jupyter_handoff.push(clf, name='tree', X=X.iloc[:100], y=y[:100])",
        timeout=120,
    )

    def tab(code: str) -> tuple[list[str], str]:
        kc.complete(code, len(code))
        reply = kc.get_shell_msg(timeout=30)["content"]
        return reply["matches"], code[reply["cursor_start"] : reply["cursor_end"]]

    assert tab("%mlops hi") == (["history"], "hi")
    assert tab("%mlops show tr") == (["tree"], "tr")
    assert tab("%mlops compare tree:") == (["2", "1"], "")
    assert tab("%mlops compare tree:2 tree:1") == (["1"], "1")
    assert tab("%mlops report tree:2 --format j") == (["json"], "j")
    assert tab("%mlops push cl") == (["clf"], "cl")
    sensitive = tab("%mlops push clf --name tree --data X y --sensitive ")
    assert sensitive == (["a", "b", "c", "d", "X", "y"], "")
    assert "abs" in tab("print(ab")[0]  # the rest of the notebook completes as before


def test_stopping_the_kernel_mid_push_keeps_nothing_and_the_next_push_works(
    agent, kernel, tmp_path
):
    """The stop button (an interrupt) while the model goes into the agent's spool: the cell
    ends with KeyboardInterrupt, no version or spool entry is left, no thread of the push
    runs on, and the same push then succeeds. The kernel's disk is made slow (each part
    written waits), so the interrupt lands mid-write, after the marker says it started."""
    km, kc = kernel
    spool = Path(json.loads(agent.runtime_file.read_text())["spool"])
    marker = tmp_path / "writing"
    kc.execute_interactive(
        "%load_ext jupyter_handoff\n" + TRAIN + "import time, numpy as np, jupyter_handoff\n"
        "from jupyter_handoff import bundle_writer\n"
        "clf.ballast_ = np.ones(5_000_000)\n"
        "write = bundle_writer.SpoolSink.write\n"
        "def slow_disk(sink, parts):\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    for part in parts:\n"
        "        write(sink, [part]); time.sleep(0.5)\n"
        "bundle_writer.SpoolSink.write = slow_disk",
        timeout=120,
    )
    msg_id = kc.execute("v = jupyter_handoff.push(clf, name='big', X=X, y=y)")
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    km.interrupt_kernel()
    errors = []
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            errors.append(msg["content"]["ename"])
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    assert errors == ["KeyboardInterrupt"]
    deadline = time.monotonic() + 30  # the agent lets go of the entry it was reading
    while "note: " in (fsck := agent.cli("fsck").stdout) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fsck.splitlines() == ["0 blobs, 0 references checked", "fsck: OK"]
    assert agent.request("GET", "/api/v1/models/big/versions")[0] == 404
    assert list(spool.iterdir()) == []
    threads = "import threading; print(sorted(t.name for t in threading.enumerate()))"
    assert "handoff" not in _printed(kc, threads)
    _printed(kc, "bundle_writer.SpoolSink.write = write")
    assert _printed(kc, "print(jupyter_handoff.push(clf, name='big').number)") == "1"


def _printed(kc, code: str) -> str:
    out = []
    kc.execute_interactive(code, timeout=120, output_hook=lambda m: out.append(m["content"]))
    return "".join(c.get("text", "") for c in out).strip()
