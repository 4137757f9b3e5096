"""The prediction log: every served request (sampled), append-only, as Parquet segments.

The model server appends records in memory and flushes them every
``c.Serving.log_flush_seconds`` (or at ``log_segment_rows``) as one Parquet segment per
model, written through the BlobStore (files or S3) and listed in ``prediction_segments``.
Segments are never rewritten; retention drops the oldest whole segments past
``retention_bytes``.

What a crash can lose: the records of the last flush interval, if the central agent process
itself dies. A serving worker's death loses nothing (the log is written by the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import random

log = logging.getLogger("handoff_agent")

SCHEMA = (
    ("request_id", "string"),
    ("model", "string"),
    ("version", "int64"),
    ("slot", "string"),
    ("time", "float64"),
    ("latency_ms", "float64"),
    ("status", "int64"),
    ("inputs", "string"),
    ("outputs", "string"),
    ("error", "string"),
)


def to_parquet(records: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {}
    for name, kind in SCHEMA:
        values = [r.get(name) for r in records]
        if name in ("inputs", "outputs"):
            values = [None if v is None else json.dumps(v, default=str) for v in values]
        columns[name] = pa.array(values, type=getattr(pa, kind)())
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, compression="zstd")
    return buf.getvalue()


def read(registry, store, model: str):
    """The model's whole log as one DataFrame, oldest first (what monitoring reads)."""
    import pandas as pd

    frames = [
        pd.read_parquet(io.BytesIO(store.read_bytes(s["digest"])))
        for s in registry.segments_of(model)
    ]
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object) for name, _ in SCHEMA})
    return pd.concat(frames, ignore_index=True)


class PredictionLog:
    """Buffered appends, flushed on a timer off the event loop. ``call`` runs a store
    method on the metadata thread, ``run_io`` a blocking call on the I/O pool."""

    def __init__(self, registry, store, call, run_io, settings):
        self.registry, self.store, self.call, self.run_io = registry, store, call, run_io
        self.settings = settings
        self.buffer: list[dict] = []
        self.written = self.dropped = 0
        self._task: asyncio.Task | None = None
        self._full = asyncio.Event()
        self._flushing = asyncio.Lock()  # a reader's flush waits for the timer's to land

    def append(self, record: dict) -> None:
        if self.settings.sample_rate < 1.0 and random.random() >= self.settings.sample_rate:
            return
        self.buffer.append(record)
        if len(self.buffer) >= self.settings.log_segment_rows:
            self._full.set()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.settings.log_flush_seconds)
            self._full.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # the next flush tries again with what is buffered then
                log.exception("writing the prediction log failed")

    async def flush(self) -> int:
        """Write what is buffered; returns once every earlier append is in a segment."""
        async with self._flushing:
            return await self._flush()

    async def _flush(self) -> int:
        records, self.buffer = self.buffer, []
        if not records:
            return 0
        by_model: dict[str, list[dict]] = {}
        for r in records:
            by_model.setdefault(r["model"], []).append(r)
        for model, rows in by_model.items():
            try:
                data = await self.run_io(to_parquet, rows)
                digest = await self.run_io(self.store.put_bytes, data)
                times = [r["time"] for r in rows]
                await self.call(
                    self.registry.segment_add,
                    model,
                    digest,
                    len(rows),
                    len(data),
                    min(times),
                    max(times),
                )
            except Exception:
                self.buffer[:0] = rows  # kept for the next flush (bounded below)
                del self.buffer[: max(0, len(self.buffer) - 10 * self.settings.log_segment_rows)]
                raise
            self.written += len(rows)
            dropped = await self.call(
                self.registry.segments_over, model, self.settings.retention_bytes
            )
            for seg in dropped:
                with contextlib.suppress(Exception):
                    await self.run_io(self.store.delete, seg["digest"])
        return len(records)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush()


def to_parquet_frame(frame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()
