"""The prediction log's columnar segments: what the server writes reads back as the same
frame the JSON segments (every segment written before, still on deployments) gave, alone or
mixed in one window, and records that fit no column are kept as JSON text."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from handoff_agent.monitor import frames
from handoff_agent.serving import predlog


def json_segment(records: list[dict]) -> bytes:
    """A segment as the log wrote every one before the columnar layout."""
    columns = {}
    for name, kind in predlog.SCHEMA:
        values = [r.get(name) for r in records]
        if name in ("inputs", "outputs"):
            values = [None if v is None else json.dumps(v, default=str) for v in values]
        columns[name] = pa.array(values, type=getattr(pa, kind)())
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def record(i: int, inputs: dict, outputs: dict | None, status: int = 200) -> dict:
    return {
        "request_id": f"r{i}",
        "model": "m",
        "version": 1,
        "slot": "production",
        "time": 1000.0 + i,
        "latency_ms": 1.5,
        "status": status,
        "inputs": inputs,
        "outputs": outputs,
        "error": None if status < 400 else "refused",
    }


def served(n: int, start: int = 0, rows_of=lambda i: 1) -> list[dict]:
    """Answered requests as ``ModelServer._predict`` logs them: 3 numeric features, a text,
    an int; a binary classifier's outputs."""
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        k = rows_of(i)
        p = rng.uniform(0, 1, k).round(4).tolist()
        inputs = {f"x{j}": rng.normal(size=k).round(4).tolist() for j in range(3)}
        inputs["cat"] = rng.choice(list("abc"), k).tolist()
        inputs["n"] = rng.integers(0, 9, k).tolist()
        outputs = {
            "predict": [int(v > 0.5) for v in p],
            "predict_proba": [[round(1 - v, 4), v] for v in p],
        }
        out.append(record(i, inputs, outputs))
    return out


def rows_of(*segments: bytes) -> pd.DataFrame:
    log = pd.concat([predlog.frame_of(s) for s in segments], ignore_index=True)
    return frames.rows(log)[1]


def test_a_columnar_segment_reads_as_the_json_segment_did():
    records = served(200)
    data = predlog.to_parquet(records)
    table = pq.read_table(io.BytesIO(data))
    # columnar: one list column per feature and output, no JSON text left
    assert {"in:x0", "in:cat", "in:n", "out:predict", "out:predict_proba"} <= set(
        table.column_names
    )
    assert table["inputs"].null_count == table["outputs"].null_count == 200
    assert table.schema.field("in:x0").type == pa.list_(pa.float64())
    new, old = rows_of(data), rows_of(json_segment(records))
    pd.testing.assert_frame_equal(new, old)
    assert new["score"].tolist() == [r["outputs"]["predict_proba"][0][1] for r in records]
    assert new["cat"].tolist() == [r["inputs"]["cat"][0] for r in records]
    # the export still serves the inputs and outputs as JSON text
    export = predlog._as_json(predlog.frame_of(data))
    assert [json.loads(t) for t in export["inputs"]] == [r["inputs"] for r in records]
    assert [json.loads(t) for t in export["outputs"]] == [r["outputs"] for r in records]


def test_a_window_of_an_old_json_segment_and_a_new_columnar_one_reads_as_one_frame():
    old_records, new_records = served(50), served(60, start=50)
    mixed = rows_of(json_segment(old_records), predlog.to_parquet(new_records))
    all_json = rows_of(json_segment(old_records), json_segment(new_records))
    pd.testing.assert_frame_equal(mixed, all_json)
    assert mixed["request_id"].tolist() == [f"r{i}" for i in range(110)]
    # a time slice of the window, as the monitor takes one per closed window
    log = pd.concat(
        [
            predlog.frame_of(json_segment(old_records)),
            predlog.frame_of(predlog.to_parquet(new_records)),
        ],
        ignore_index=True,
    )
    window = log[(log["time"] >= 1040) & (log["time"] < 1070)]
    requests, got = frames.rows(window)
    assert len(requests) == 30 and got["request_id"].tolist() == [f"r{i}" for i in range(40, 70)]


def test_irregular_records_are_all_logged_and_read_back():
    records = served(6)
    refused = record(6, {"x0": ["oops"], "x1": [1.0]}, None, status=422)  # text for a number
    missing = record(7, {"x0": [0.1], "x1": [0.2], "x2": [0.3], "n": [1]}, records[0]["outputs"])
    ragged = record(
        8,
        {"x0": [0.1, 0.2], "x1": [0.3], "x2": [0.4, 0.5], "cat": ["a", "b"], "n": [1, 2]},
        {"predict": [1, 0], "predict_proba": [[0.2, 0.8], [0.6, 0.4]]},
    )
    odd_outputs = record(9, records[1]["inputs"], {"predict": [1]})  # no predict_proba
    everything = [*records[:3], refused, missing, ragged, odd_outputs, *records[3:]]
    data = predlog.to_parquet(everything)
    table = pq.read_table(io.BytesIO(data))
    assert table.num_rows == len(everything)
    fallback = [r is not None for r in table["inputs"].to_pylist()]
    assert fallback == [False] * 3 + [True] * 4 + [False] * 3  # only the odd ones as JSON
    export = predlog._as_json(predlog.frame_of(data))
    assert export["request_id"].tolist() == [r["request_id"] for r in everything]
    assert [json.loads(t) for t in export["inputs"]] == [r["inputs"] for r in everything]
    # the monitor's frame is what the all-JSON log gives (the refused request is traffic only)
    requests, got = frames.rows(predlog.frame_of(data))
    pd.testing.assert_frame_equal(got, rows_of(json_segment(everything)), check_dtype=False)
    assert len(requests) == 10 and "r6" not in set(got["request_id"])
    assert got.loc[got["request_id"] == "r7", "cat"].isna().all()  # the missing key: null


def test_a_segment_arrow_cannot_type_stays_json():
    records = served(3)
    records[1]["inputs"]["x0"] = ["text"]  # answered, yet a text where numbers were
    data = predlog.to_parquet(records)
    table = pq.read_table(io.BytesIO(data))
    assert not [c for c in table.column_names if c.startswith(("in:", "out:"))]
    assert [json.loads(t) for t in table["inputs"].to_pylist()] == [r["inputs"] for r in records]
    assert frames.rows(predlog.frame_of(data))[1]["x0"].tolist()[1] == "text"


def test_multi_row_requests_explode_in_order():
    records = served(40, rows_of=lambda i: 1 + i % 4)
    data = predlog.to_parquet(records)
    got = rows_of(data)
    expect_ids = [r["request_id"] for r in records for _ in r["inputs"]["x0"]]
    assert got["request_id"].tolist() == expect_ids
    assert got["row"].tolist() == [j for r in records for j in range(len(r["inputs"]["x0"]))]
    assert got["x1"].tolist() == [v for r in records for v in r["inputs"]["x1"]]
    assert got["cat"].tolist() == [v for r in records for v in r["inputs"]["cat"]]
    assert got["prediction"].tolist() == [v for r in records for v in r["outputs"]["predict"]]
    assert got["score"].tolist() == [p[1] for r in records for p in r["outputs"]["predict_proba"]]
    # the JSON path gave the same values (as Python objects: its explode kept object columns)
    pd.testing.assert_frame_equal(got, rows_of(json_segment(records)), check_dtype=False)


def test_an_outage_keeps_every_models_rows_and_drops_past_the_bound_counted(tmp_path):
    """The blob store out of reach while two models' rows wait: every model's rows are kept
    for the next flush (only the first one's were; the others were lost), and past the
    buffer's bound the oldest go, counted."""
    import asyncio
    import contextlib
    from types import SimpleNamespace

    from handoff_agent.store.blobs import BlobUnavailable, open_blob_store
    from handoff_agent.store.metadata import MetadataStore

    registry, real = MetadataStore.for_home(tmp_path), open_blob_store("", tmp_path)

    class Store:  # the real store, while S3 is reachable
        down = True

        def put_bytes(self, data):
            if self.down:
                raise BlobUnavailable("S3 is not answering")
            return real.put_bytes(data)

    async def call(fn, *args):
        return fn(*args)

    settings = SimpleNamespace(sample_rate=1.0, log_segment_rows=3, retention_bytes=1 << 30)
    log = predlog.PredictionLog(registry, Store(), call, call, settings)
    rows = served(40)
    for i, r in enumerate(rows):
        r["model"] = "churn" if i % 2 else "risk"
    for r in rows[:20]:
        log.append(r)

    async def run():
        with contextlib.suppress(BlobUnavailable):
            await log.flush()
        assert len(log.buffer) == 20 and log.dropped == 0  # both models' rows kept
        for r in rows[20:]:
            log.append(r)
        with contextlib.suppress(BlobUnavailable):
            await log.flush()
        assert len(log.buffer) == 30 and log.dropped == 10  # the bound: 10 segments' rows
        log.store.down = False
        return await log.flush()

    assert asyncio.run(run()) == 30
    stored = {m: sum(s["rows"] for s in registry.segments_of(m)) for m in ("churn", "risk")}
    assert stored == {"churn": 15, "risk": 15}, stored
    registry.close()
