"""The backfill import's segments: the server's columnar layout when Arrow can type the
file's columns, JSON text otherwise, read by the monitor as the same frame."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from handoff_agent.monitor import backfill, frames
from handoff_agent.serving import predlog


def test_a_backfill_writes_the_columnar_layout_and_reads_as_its_json_did():
    part = pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "d"],
            "_t": [1.0, 2.0, 3.0, 4.0],
            "x": [0.5, np.nan, 1.5, 2.5],
            "n": [1, 2, 3, 4],
            "cat": pd.concat(  # Arrow-backed text of two chunks, as a file's days concatenated
                [pd.Series(v, dtype="string[pyarrow]") for v in (["u", "v"], ["u", "w"])],
                ignore_index=True,
            ),
            "prediction": [1, 0, 1, 1],
            "score": [0.8, 0.3, np.nan, 0.9],
        }
    )
    feats = ["x", "n", "cat"]

    def rows(columnar):
        data = backfill._records_parquet(part, feats, "m", columnar=columnar)
        names = pq.read_table(io.BytesIO(data)).column_names
        return [c for c in names if ":" in c], frames.rows(predlog.frame_of(data))[1]

    lists, got = rows(True)
    assert lists == ["in:x", "in:n", "in:cat", "out:predict", "out:predict_proba"]
    text, expected = rows(False)
    assert text == []
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert got["score"].tolist()[:2] == [0.8, 0.3] and np.isnan(got["score"].iloc[2])
    # a column of numbers and text mixed has no one Arrow type: the part stays JSON text
    part["x"] = [0.5, "oops", 1.5, 2.5]
    assert rows(True)[0] == []
