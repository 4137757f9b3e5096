"""``jupyter handoff monitor run NAME --now TS`` without a running central evaluates in its own
process: a time monitoring cannot replay (NaN, a far year) is one line and exit 1, as the
API's 400 is, never a loop over windows that never ends."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from support import handoff_cli

from handoff_agent.store.metadata import MetadataStore


@pytest.mark.parametrize("now", ["nan", "inf", "1e12", "9999-12-31T00:00:00Z", "1999-01-01"])
def test_a_replay_time_out_of_range_is_one_line_offline(tmp_path, now):
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "no-central")}
    home = tmp_path / "central"
    home.mkdir()
    MetadataStore.for_home(home).close()  # central's home, as its first start leaves it
    log = pd.DataFrame({"x": np.arange(10.0), "prediction": [0, 1] * 5})
    log["time"] = 1_767_225_600 + np.arange(10) * 60.0
    log.to_parquet(tmp_path / "log.parquet")
    imported = handoff_cli(
        env, "monitor", "import", "churn", str(tmp_path / "log.parquet"), "--home", str(home)
    )
    assert imported.returncode == 0, imported.stderr

    out = handoff_cli(env, "monitor", "run", "churn", "--now", now, "--home", str(home))

    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.strip() == (
        f"--now {now!r} is not a time between 2000-01-01 and 7 days from now."
    ), out.stderr
