"""A warm worker has done, before its job, what every job's first steps need."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd

READ_AFTER_WARMING = """
import io, json, sys
from handoff_agent.worker import _warm_imports, exit_now
_warm_imports()
before = set(sys.modules)
from handoff_agent.parquet_bytes import read_frame
read_frame(open(sys.argv[1], "rb").read())
print(json.dumps(sorted(set(sys.modules) - before)))
exit_now(0)  # as the worker ends
"""


def test_reading_the_pushed_data_imports_nothing_after_the_warm_up(tmp_path):
    path = tmp_path / "X.parquet"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(50, 3)), columns=["a", "b", "c"])
    frame["group"] = pd.Categorical(rng.choice(["x", "y"], 50))
    frame.to_parquet(path, index=False)
    out = subprocess.run(
        [sys.executable, "-c", READ_AFTER_WARMING, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout.splitlines()[-1]) == []
