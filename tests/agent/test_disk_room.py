"""A full disk at an agent: a bundle it has no room for is refused before a byte is sent (one
line in the notebook, and the status says the disk is low), a disk that fills midway loses
nothing, checks whose outcome cannot be recorded finish once there is room again (the health
check says full meanwhile), and a delivery waits in the local agent's outbox while central, or
the local agent itself, has no room for it.

The disks are real: a small tmpfs each agent sees as its home in a mount namespace of its own
(bubblewrap, as the sandbox uses), filled and freed from outside through /proc/PID/root."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import subprocess
import tarfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from support import (
    RunningAgent,
    bundle_bytes,
    handoff_cli,
    make_tar,
    manifest_for,
    small_disk,
    until,
)
from test_pipeline_central import start_pair
from test_pipeline_delivery import FAST, outbox_states, push_many

from handoff_agent.forwarding.loop import NO_ROOM

SIZE = 64 << 20
RESERVE = 56 << 20  # so a bundle of more than ~7 MiB finds no room, and a small one does


def _bwrap_sizes_tmpfs(tmp: Path) -> bool:
    try:
        return subprocess.run([*small_disk(tmp, 1 << 20), "true"], timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def small(tmp_path_factory, backend):
    """A local agent whose home is a 64 MiB disk, keeping 56 MiB free (its database and
    blobs in the home: the files backend alone)."""
    base = tmp_path_factory.mktemp("small-disk")
    if not _bwrap_sizes_tmpfs(base / "probe"):
        pytest.skip("bubblewrap cannot mount a sized tmpfs here")
    home = base / "home"
    agent = RunningAgent(
        home,
        base / "rt",
        [f"--HandoffAgent.min_free_space={RESERVE}"],
        database_url=None,  # SQLite in the home: the database shares the small disk
        prefix=small_disk(home, SIZE),
    )
    agent.start()
    yield agent
    agent.stop()


def inside(agent: RunningAgent) -> Path:
    """The agent's home, on its small disk, as the agent sees it."""
    return Path(f"/proc/{agent.pid}/root") / str(agent.home).lstrip("/")


def partial_files(agent: RunningAgent) -> list[Path]:
    return [p for p in inside(agent).rglob("*") if p.name.endswith(".part")]


@contextlib.contextmanager
def filled(agent: RunningAgent, leave: int = 0):
    """The agent's disk full but for ``leave`` bytes while inside the ``with``."""
    filler = inside(agent) / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for block in (b"\1" * (1 << 20), b"\1" * 4096, b"\1"):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block)
        os.ftruncate(fd, os.fstat(fd).st_size - leave)
        yield
    finally:
        os.close(fd)
        filler.unlink()


def chunked_push(agent: RunningAgent, name: str, data: bytes):
    """A push with no declared size (Transfer-Encoding: chunked), as curl sends a stream: the
    agent cannot know before the bytes come whether they fit."""
    conn = http.client.HTTPConnection(agent.host, agent.port, timeout=60)
    headers = {
        "Authorization": f"token {agent.token}",
        "Content-Type": "application/x-tar",
        "X-Handoff-Digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
    }
    parts = (data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20))
    try:
        conn.request("POST", f"/api/v1/models/{name}/versions", parts, headers, encode_chunked=True)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), json.loads(resp.read())
    finally:
        conn.close()


PUSH_TOO_BIG = """
import numpy as np
from sklearn.neighbors import KNeighborsClassifier
rng = np.random.default_rng(0)
X = rng.normal(size=(60_000, 20))  # kept by the model: a 10 MB bundle
knn = KNeighborsClassifier().fit(X, (X[:, 0] > 0).astype(int))
%mlops push knn --name wide
"""


def test_a_push_the_disk_has_no_room_for_is_one_line_in_the_notebook(small):
    nb = nbformat.v4.new_notebook()
    setup = f"import os\nos.environ['JUPYTER_RUNTIME_DIR'] = {str(small.runtime_dir)!r}\n"
    nb.cells = [
        nbformat.v4.new_code_cell(setup + "%load_ext jupyter_handoff"),
        nbformat.v4.new_code_cell(PUSH_TOO_BIG),
        nbformat.v4.new_code_cell("%mlops agent status"),
    ]
    NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True).execute()
    outputs = nb.cells[1].outputs
    text = "".join(o.get("text", "") for o in outputs)
    # Then the analyst reads one line that says whose disk, how much room and how much it needs
    assert outputs and {o["output_type"] for o in outputs} == {"stream"}, outputs
    first, *rest = text.strip().splitlines()
    assert first.startswith("UsageError: The local agent's disk is full: "), text
    assert "MiB free, and this bundle needs 10 MiB with 56 MiB kept free. (disk_full)" in first, (
        text
    )
    assert len(rest) <= 2 and "Traceback" not in text, text
    # And the agent's status says its disk is low (63 MiB free, under twice the 56 kept)
    status = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert "Disk: low (pushes are refused once it is full" in status, status
    # And nothing of it was stored
    assert small.request("GET", "/api/v1/models/wide/versions")[0] == 404
    assert partial_files(small) == []


def test_a_disk_that_fills_while_a_bundle_arrives_loses_nothing(small):
    kept = bundle_bytes("kept", model=os.urandom(100_000))
    assert small.push_bytes("kept", kept)[0] == 201
    # When a stream of unknown size outgrows the disk midway
    status, headers, err = chunked_push(small, "flood", bundle_bytes("flood", os.urandom(SIZE)))
    # Then it is refused with a reason and when to come back, and no byte of it is left
    assert (status, err["error"]["code"]) == (503, "disk_full"), err
    assert err["error"]["message"] == "The local agent's disk is full.", err
    assert int(headers["Retry-After"]) > 0
    assert partial_files(small) == []
    assert small.request("GET", "/api/v1/models/flood/versions")[0] == 404
    # And what was stored before is whole, and the agent takes the next push
    status, headers, _ = small.request_full("GET", "/api/v1/models/kept/versions/1/bundle")
    assert (status, headers["X-Handoff-Digest"]) == (
        200,
        f"sha256:{hashlib.sha256(kept).hexdigest()}",
    )
    assert small.push_bytes("after", bundle_bytes("after"))[0] == 201


def test_checks_whose_outcome_finds_the_disk_full_finish_once_there_is_room(small):
    status, out = small.push_bytes("later", bundle_bytes("later", model=os.urandom(50_000)))
    assert status == 201, out
    with filled(small):
        # While the disk is full, every write is refused the same way, the database's too
        status, err = small.request("POST", "/api/v1/tokens", {"user": "x", "roles": ["analyst"]})
        assert (status, err["error"]["code"]) == (503, "disk_full"), err
        assert "(its database could not grow)" in err["error"]["message"]
        # and a probe, or the admin in a shell, reads it before anyone pushes
        assert small.request("GET", "/api/v1/health", token=False)[1]["disk"] == "full"
        status = handoff_cli(small.env, "status")
        assert "Disk: full (pushes are refused once it is full" in status.stdout, status
        until(lambda: "could not be recorded" in small.read_log(), timeout=60, what="a retry")
        version = small.request("GET", "/api/v1/models/later/versions/1")[1]
        assert version["status"] == "checking" and not version.get("reports"), version
    # Once there is room, the checks' outcomes are recorded and the report is written
    until(
        lambda: small.request("GET", "/api/v1/models/later/versions/1")[1].get("reports"),
        timeout=60,
        what="the verdict and reports",
    )
    version = small.request("GET", "/api/v1/models/later/versions/1")[1]
    assert version["status"] == "failed", version  # its model is no pickle: loads says so
    assert small.request("GET", "/api/v1/models/later/versions/1/report")[0] == 200
    # 63 MiB free, less than twice the 56 MiB kept: low, not yet full
    assert small.request("GET", "/api/v1/health", token=False)[1]["disk"] == "low"


def test_a_delivery_to_a_full_central_waits_in_the_outbox_and_goes_in_later(tmp_path):
    if not _bwrap_sizes_tmpfs(tmp_path / "probe"):
        pytest.skip("bubblewrap cannot mount a sized tmpfs here")
    local, central = start_pair(
        tmp_path,
        revalidate=False,
        local_args=FAST,
        central_prefix=small_disk(tmp_path / "central", 128 << 20),
        central_args=["--HandoffAgent.disk_full_retry_after=3"],
    )
    try:
        with filled(central):
            push_many(local, 1)

            def waiting():
                rows = local.request("GET", "/api/v1/outbox")[1]["outbox"]
                return next((r for r in rows if r["state"] == "pending" and r["last_error"]), None)

            row = until(waiting, timeout=60, what="the delivery refused")
            assert "503 disk_full: Central's disk is full" in row["last_error"], row
            assert central.request("GET", "/api/v1/models/many/versions")[0] == 404
        # Once central has room, the delivery goes in (after the 3 s central's Retry-After
        # asked for, not the default minute): nothing was lost
        until(lambda: outbox_states(local) == {"delivered": 1}, timeout=40, what="delivered")
        assert len(central.request("GET", "/api/v1/models/many/versions")[1]["versions"]) == 1
    finally:
        local.stop()
        central.stop()


def test_a_forward_with_no_room_for_its_body_waits_and_goes_later(tmp_path):
    """The local agent builds a delivery's body (the envelope around the bundle) on its own
    disk: with no room for it, the delivery waits in the outbox, saying so, and goes once
    there is room; it is never dead-lettered as if the bundle were damaged."""
    if not _bwrap_sizes_tmpfs(tmp_path / "probe"):
        pytest.skip("bubblewrap cannot mount a sized tmpfs here")
    size = 4 << 20
    model = os.urandom(size)  # central loads only skops, so no conversion: the body is a copy
    manifest = manifest_for("roomy", {"model.skops": model}, serialization="skops")
    data = make_tar(
        [
            ("manifest.json", json.dumps(manifest).encode(), tarfile.REGTYPE),
            ("model.skops", model, tarfile.REGTYPE),
        ]
    )
    local, central = start_pair(
        tmp_path,
        revalidate=False,
        local_args=[*FAST, "--HandoffAgent.min_free_space=0"],
        local_prefix=small_disk(tmp_path / "local", 64 << 20),
    )
    try:
        # Room for the push, not for its delivery's body beside it
        with filled(local, leave=size + (2 << 20)):
            assert local.push_bytes("roomy", data)[0] == 201

            def waiting():
                rows = local.request("GET", "/api/v1/outbox")[1]["outbox"]
                return next((r for r in rows if r["state"] == "pending" and r["last_error"]), None)

            row = until(waiting, timeout=60, what="the delivery waiting for room")
            assert row["last_error"] == NO_ROOM, row
            assert partial_files(local) == []
        until(lambda: outbox_states(local) == {"delivered": 1}, timeout=60, what="delivered")
        assert central.request("GET", "/api/v1/models/roomy/versions")[0] == 200
    finally:
        local.stop()
        central.stop()
