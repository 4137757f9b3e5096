"""``jupyter handoff monitor import`` killed midway (kill -9, a lost connection) adds nothing
to the model's prediction log, so running it again holds each prediction once: the monitor
never counts a backfilled prediction twice."""

from __future__ import annotations

import http.client
import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from s3_support import agent_blobs
from support import RunningAgent, until

from handoff_agent.monitor.backfill import SEGMENT_ROWS

# Enough segments that the import is still storing them (six to go) when the test kills it
# after the second; each costs seconds in the three imports and the two exports of the log.
SEGMENTS = 8


@pytest.fixture
def central(tmp_path, backend):
    c = RunningAgent(tmp_path / "central", tmp_path / "rt", ["--role", "central"])
    c.start()
    yield c
    c.stop()


def import_command(central: RunningAgent, path) -> list[str]:
    return [
        *(sys.executable, "-m", "handoff_agent", "monitor", "import", "churn", str(path)),
        *central.blob_args(),
        *("--home", str(central.home)),
    ]


def logged(central: RunningAgent) -> pd.Series:
    """The request ids in churn's prediction log, as GET …/predictions serves it."""
    conn = http.client.HTTPConnection(central.host, central.port, timeout=120)
    try:
        conn.request(
            "GET",
            "/api/v1/models/churn/predictions",
            headers={"Authorization": f"token {central.token}"},
        )
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, body[:300]
    return pd.read_parquet(io.BytesIO(body))["request_id"]


def test_an_import_killed_midway_adds_nothing_and_its_rerun_counts_each_row_once(central, tmp_path):
    # Given a day of predictions from another system, many segments long
    rows = SEGMENTS * SEGMENT_ROWS
    rng = np.random.default_rng(0)
    day = (pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=1)).timestamp()
    log = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["a", "b", "c"]).assign(
        time=day + np.sort(rng.uniform(0, 86400, rows)),
        request_id=[f"r{i}" for i in range(rows)],
        prediction=rng.integers(0, 2, rows),
        label=rng.integers(0, 2, rows),
    )
    path = tmp_path / "log.parquet"
    log.to_parquet(path)
    blobs = agent_blobs(central)
    before = set(blobs.iter_digests())
    # When its import is killed once a second segment is stored
    proc = subprocess.Popen(
        import_command(central, path),
        env=central.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    until(
        lambda: proc.poll() is not None or len(set(blobs.iter_digests()) - before) >= 2,
        what="the import's second segment",
        every=0.01,
    )
    assert proc.poll() is None, "the import ended before it could be killed"
    proc.kill()
    proc.wait()
    # then the log holds none of the file
    segments = "SELECT count(*) AS n FROM prediction_segments WHERE model = 'churn'"
    assert central.sql(segments) == [{"n": 0}]
    # When it is run again to the end, the log holds each prediction once
    out = central.cli("monitor", "import", "churn", str(path), timeout=600)  # many S3 PUTs
    assert out.returncode == 0, out.stdout + out.stderr
    ids = logged(central)
    assert len(ids) == rows and ids.nunique() == rows
    # And run once more (its end not seen, say): the log still holds each prediction once
    out = central.cli("monitor", "import", "churn", str(path), "--json", timeout=600)
    assert out.returncode == 0 and json.loads(out.stdout)["already_logged"] == rows, out.stdout
    assert len(logged(central)) == rows
