"""Pushed data read from memory: the frame pandas would give, and a process that ends cleanly."""

import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from handoff_agent.parquet_bytes import read_frame

READ_AND_END = """
import sys
from handoff_agent.parquet_bytes import read_frame
read_frame(open(sys.argv[1], "rb").read())
"""


def _mixed() -> bytes:
    frame = pd.DataFrame(
        {
            "x": [1.5, np.nan, 3.0],
            "word": ["a", None, "c"],
            "group": pd.Categorical(["u", "v", "u"]),
            "when": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"]),
            "count": pd.array([1, None, 3], dtype="Int64"),
        },
        index=[4, 8, 9],
    )
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


def test_the_frame_is_the_one_pandas_reads():
    data = _mixed()
    pd.testing.assert_frame_equal(read_frame(data), pd.read_parquet(io.BytesIO(data)))


def test_a_process_that_read_pushed_data_exits_cleanly(tmp_path):
    """pd.read_parquet on bytes aborted about one exit in four here (apache/arrow#34314)."""
    path = tmp_path / "X.parquet"
    path.write_bytes(_mixed())

    def run(_):
        cmd = [sys.executable, "-c", READ_AND_END, str(path)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(2) as pool:
        ends = list(pool.map(run, range(16)))
    assert [(e.returncode, e.stderr.strip()) for e in ends if e.returncode] == []
