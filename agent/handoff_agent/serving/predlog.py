"""The prediction log: every served request (sampled), append-only, as Parquet segments.

The model server appends records in memory and flushes them every
``c.Serving.log_flush_seconds`` (or at ``log_segment_rows``) as one Parquet segment per
model, written through the BlobStore (files or S3) and listed in ``prediction_segments``.
Segments are never rewritten; retention drops the oldest whole segments past
``retention_bytes``.

What a crash can lose: the records of the last flush interval, if the central agent process
itself dies. A serving worker's death loses nothing (the log is written by the server).

Inputs and outputs are columnar: a record's ``inputs`` (feature -> one value per row of the
request) become Parquet list columns ``in:FEATURE``, its outputs ``out:KEY``, so neither the
server nor the monitor turns a million values into JSON text and back. The records that do
not fit the segment's columns (a refused request, other keys, ragged or empty lists) keep
their inputs and outputs as JSON text in ``inputs``/``outputs``, as every segment did before
this layout (and a whole segment does when Arrow cannot type a column: numbers and text
mixed), so nothing is lost and old segments read alongside new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import random
import time

from ..errors import Conflict
from ..outage import failed_round
from ..parquet_bytes import read_table

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


IN, OUT = "in:", "out:"  # columnar inputs and outputs; no fixed column has a colon


def _list_of_scalars(t, depth: int) -> bool:
    """A list type whose values are scalars (``depth`` 2: lists of lists of scalars)."""
    import pyarrow as pa

    for _ in range(depth):
        if not pa.types.is_list(t):
            return False
        t = t.value_type
    return not pa.types.is_nested(t)


def _typed(values: list, keys) -> dict:
    """``values`` (dicts with ``keys``, or None) as one Arrow array per key, in the keys'
    order (older pyarrow infers a struct's fields sorted), typed by the first few (a single
    pass, no inference over all) unless one does not fit that type."""
    import pyarrow as pa

    sample = [v for v in values[:256] if v is not None][:64]
    try:
        array = pa.array(values, type=pa.array(sample).type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
        array = pa.array(values)  # e.g. an int column whose later values are floats
    by_name = {f.name: c for f, c in zip(array.type, array.flatten(), strict=True)}
    return {k: by_name[k] for k in keys}


def _columnar(records: list[dict]):
    """The ``in:``/``out:`` columns of the records that fit one layout (answered, the first
    such record's keys, every feature a list of that request's rows typed alike by Arrow),
    and which records fit; ``({}, None)`` when none do (or Arrow cannot type a column)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def answered(r) -> bool:
        return (r.get("status") or 200) < 400 and type(r.get("inputs")) is dict

    first = next((r for r in records if answered(r) and r["inputs"]), None)
    if first is None:
        return {}, None
    keys = first["inputs"].keys()
    out_keys = next(
        (r["outputs"].keys() for r in records if answered(r) and type(r.get("outputs")) is dict),
        {},
    )
    fit = [
        answered(r)
        and r["inputs"].keys() == keys
        and (
            r.get("outputs") is None
            or (type(r["outputs"]) is dict and r["outputs"].keys() == out_keys)
        )
        for r in records
    ]
    n, columns = len(records), {}
    try:
        ins = [r["inputs"] if f else None for r, f in zip(records, fit, strict=True)]
        for name, col in _typed(ins, keys).items():
            if not _list_of_scalars(col.type, 1):
                return {}, None
            columns[IN + name] = col
        if out_keys:
            outs = [
                r.get("outputs") or None if f else None for r, f in zip(records, fit, strict=True)
            ]
            for name, col in _typed(outs, out_keys).items():
                if not (_list_of_scalars(col.type, 1) or _list_of_scalars(col.type, 2)):
                    return {}, None
                columns[OUT + name] = col
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
        return {}, None  # e.g. a number and a text in one feature: the segment stays JSON
    # every feature of a record as long as its first (a request's rows), none empty or null
    lengths = pc.list_value_length(columns[IN + next(iter(keys))])
    good = pc.and_kleene(pa.array(fit), pc.greater(lengths, 0))
    no_out = pa.array([not r.get("outputs") for r in records])
    for name, col in columns.items():
        same = pc.equal(pc.list_value_length(col), lengths)
        if name.startswith(OUT):  # a request without outputs has none of them
            same = pc.or_kleene(pc.and_kleene(pc.is_null(col), no_out), same)
        good = pc.and_kleene(good, pc.fill_null(same, False))
    good = pc.fill_null(good, False)
    if not pc.any(good).as_py():
        return {}, None
    if not pc.all(good).as_py():
        columns = {k: pc.if_else(good, c, pa.nulls(n, c.type)) for k, c in columns.items()}
    return columns, good.to_numpy(zero_copy_only=False)


def to_parquet(records: list[dict]) -> bytes:
    """One segment: the fixed columns, the columnar inputs and outputs, and JSON text for the
    records that do not fit them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    layout, fits = _columnar(records)
    kinds = pa.struct([(name, getattr(pa, kind)()) for name, kind in SCHEMA])
    texts = ("inputs", "outputs")  # as JSON text, for the records that do not fit the layout
    fixed = pa.array(records, type=pa.struct([f for f in kinds if f.name not in texts]))
    columns = {f.name: c for f, c in zip(fixed.type, fixed.flatten(), strict=True)}
    odd = [True] * len(records) if fits is None else (~fits).tolist()
    for name in texts:
        columns[name] = pa.array(
            [
                json.dumps(r[name], default=str) if o and r.get(name) is not None else None
                for r, o in zip(records, odd, strict=True)
            ],
            type=pa.string(),
        )
    columns = {name: columns[name] for name, _ in SCHEMA}
    columns.update(layout)
    # dictionaries for the few repeated texts only: on measured values they cost time and bytes
    repeated = ["model", "slot", "error"] + [
        f"{k}.list.element" for k, c in layout.items() if pa.types.is_string(c.type.value_type)
    ]
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, compression="zstd", use_dictionary=repeated)
    return buf.getvalue()


def frame_of(data: bytes):
    """A segment as a DataFrame: the fixed columns as pandas types, the ``in:``/``out:``
    lists kept in Arrow (``pd.ArrowDtype``: no Python object per value) for
    ``monitor.frames.rows`` to flatten."""
    import pandas as pd

    table = read_table(data)
    lists = [c for c in table.column_names if c.startswith((IN, OUT))]
    frame = table.select([c for c in table.column_names if c not in lists]).to_pandas()
    for c in lists:
        frame[c] = pd.arrays.ArrowExtensionArray(table[c])
    return frame


def _as_json(frame):
    """The old layout (inputs and outputs as JSON text) of a frame with columnar records:
    what the log's export serves. Python per record: an export, not the monitor's path."""
    import pyarrow as pa

    lists = [c for c in frame.columns if c.startswith((IN, OUT))]
    if not lists:
        return frame
    values = {c: pa.array(frame[c]).to_pylist() for c in lists}
    for target, prefix in (("inputs", IN), ("outputs", OUT)):
        cols = [c for c in lists if c.startswith(prefix)]
        texts = frame[target].astype(object).tolist()
        for i in range(len(frame)):
            got = {c[len(prefix) :]: values[c][i] for c in cols if values[c][i] is not None}
            if texts[i] is None or texts[i] != texts[i]:  # None or NaN: columnar or absent
                texts[i] = json.dumps(got, default=str) if got else None
        frame[target] = texts
    return frame.drop(columns=lists)


def segment_frame(registry, blobs, model: str, segment: dict):
    """One segment's records; None once it is quarantined because its bytes are bad: one
    warning line and an audit row, once. A store out of reach, or a blob missing (more likely
    a store pointed at the wrong place than a lost segment), is no quarantine: it raises."""
    import pyarrow as pa

    from ..store.blobs import BlobCorrupt

    if segment.get("quarantined"):
        return None
    try:
        return frame_of(blobs.read_bytes(segment["digest"]))
    except BlobCorrupt:
        reason = "its bytes no longer match their digest"
    except pa.ArrowInvalid as e:  # bad bytes; an Arrow lacking a codec is not their fault
        reason = f"it is not a readable Parquet segment ({str(e).strip()[:200]})"
    segment["quarantined"] = reason
    if registry.segment_quarantine(model, segment, reason):
        log.warning(
            "%s's prediction-log segment %s (%d predictions, %s to %s) is quarantined: %s; "
            "monitoring goes on without it (run `jupyter handoff fsck`)",
            model,
            segment["digest"],
            segment["rows"],
            _when(segment["first_time"]),
            _when(segment["last_time"]),
            reason,
        )
    return None


def release(registry, blobs, model: str, by: str) -> dict:
    """Read each quarantined segment of ``model`` again; lift the quarantine of those whose
    blob reads whole now (restored from a backup). Windows already judged stay as judged."""
    import pyarrow as pa

    from ..store.blobs import BlobCorrupt, BlobMissing

    released, still = [], []
    for s in registry.segments_of(model):
        if not s.get("quarantined"):
            continue
        try:
            frame_of(blobs.read_bytes(s["digest"]))
        except (BlobCorrupt, BlobMissing, pa.ArrowInvalid) as e:
            still.append({"digest": s["digest"], "rows": s["rows"], "now": str(e)[:300]})
            continue
        if registry.segment_release(model, s, by):
            released.append({"digest": s["digest"], "rows": s["rows"]})
    return {"model": model, "released": released, "still_quarantined": still}


def read(registry, store, model: str, skip_quarantined: bool = False):
    """The model's whole log as one DataFrame, oldest first, inputs and outputs as JSON text
    (what the log's export serves). Quarantined segments refuse it (409, naming them) unless
    ``skip_quarantined``: an export that silently lacks predictions would mislead an audit."""
    import pandas as pd

    frames, left_out = [], []
    for s in registry.segments_of(model):
        frame = segment_frame(registry, store, model, s)
        if frame is None:
            left_out.append(s)
        else:
            frames.append(frame)
    if left_out and not skip_quarantined:
        raise Conflict(
            f"{len(left_out)} segment(s) of {model}'s prediction log "
            f"({sum(s['rows'] for s in left_out)} predictions, "
            f"{_when(min(s['first_time'] for s in left_out))} to "
            f"{_when(max(s['last_time'] for s in left_out))}) are quarantined: "
            f"{left_out[0]['quarantined']}.",
            "Export the rest with ?quarantined=skip; `jupyter handoff fsck` lists the "
            "damaged blobs.",
            code="log_segments_quarantined",
        )
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object) for name, _ in SCHEMA})
    return _as_json(pd.concat(frames, ignore_index=True))


def _when(t: float) -> str:
    from ..monitor.windows import readable

    return readable(t)


class PredictionLog:
    """Buffered appends, flushed on a timer off the event loop. ``call`` runs a store
    method on the metadata thread, ``run_io`` a blocking call on the I/O pool."""

    def __init__(self, registry, store, call, run_io, settings):
        self.registry, self.store, self.call, self.run_io = registry, store, call, run_io
        self.settings = settings
        self.buffer: list[dict] = []
        self.written = self.dropped = 0
        self._dropped_said = -60.0
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
                failed_round(log, "writing the prediction log failed")

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
        kept, failed = [], None
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
            except Exception as e:  # every model's rows are kept for the next flush
                kept += rows
                failed = failed or e
                continue
            self.written += len(rows)
            dropped = await self.call(
                self.registry.segments_over, model, self.settings.retention_bytes
            )
            for seg in dropped:
                with contextlib.suppress(Exception):
                    await self.run_io(self.store.delete, seg["digest"])
        if failed is not None:
            self.buffer[:0] = sorted(kept, key=lambda r: r["time"])  # the oldest first
            over = len(self.buffer) - 10 * self.settings.log_segment_rows
            if over > 0:  # bounded: the oldest go, counted and said (once a minute)
                del self.buffer[:over]
                self.dropped += over
                if time.monotonic() - self._dropped_said >= 60:
                    self._dropped_said = time.monotonic()
                    log.warning(
                        "the prediction log could not be stored: %d rows dropped so far",
                        self.dropped,
                    )
            raise failed
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
