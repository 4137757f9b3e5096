"""Fingerprints of a data source, read as data only (Parquet, CSV, SQL rows; no model code).

Files and globs: each file's size, mtime and sha256, a digest over them all, and summary
statistics of the rows. SQL: the row count, a hash of the result's schema, ``max(updated_at)``
when the result has that column, and the same statistics. The statistics keep, for every
numeric column, its histogram over bins fixed from a reference, so PSI needs no second read.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import drift

if TYPE_CHECKING:
    import pandas as pd

# Rows read of each file (or of a query's result) for statistics and a revalidation, by
# default; c.HandoffAgent.watch_max_rows sets it. Hashes cover everything; a Parquet file's
# row count comes from its footer.
MAX_ROWS = 1_000_000
SUFFIXES = (".parquet", ".pq", ".csv")


class SourceError(ValueError):
    """The source cannot be read; the message says what to fix."""


def is_sql(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def sqlite_path(url: str) -> Path | None:
    """The file a ``sqlite:///…`` URL names (None for other databases, or in memory)."""
    from ..store.warehouse import sqlite_file

    found = sqlite_file(url)
    return None if found is None else Path(found)


def outside(paths: list[Path], home: Path | None) -> list[Path]:
    """``paths``, unless one of them leads (a symlink, ``..``) into the agent's ``home``: a
    watch reads the user's data, never the agent's own stores or keys, whatever appears in a
    watched folder after the watch was registered."""
    if home is not None:
        root = Path(home).resolve()
        for p in paths:
            if p.resolve().is_relative_to(root):
                raise SourceError(
                    f"{p} leads into the agent's own home; a watch reads your data, not "
                    "Handoff's storage."
                )
    return paths


def files_of(pattern: str) -> list[Path]:
    """The files a path or glob names now. Wildcards only in the file name and its folder
    (``data/2026-*/part-*.parquet``), so that a glob never walks a whole tree."""
    path = pattern[len("file://") :] if pattern.startswith("file://") else pattern
    if glob.has_magic(str(Path(path).parent.parent)) or "**" in path:
        raise SourceError(
            f"{pattern!r} has wildcards above the file's folder; a watched glob may have them "
            "only in the file name and its folder, e.g. data/2026-*/part-*.parquet."
        )
    try:  # is_file lets a name too long or a folder it may not enter raise
        if glob.has_magic(path):
            return [Path(p) for p in sorted(glob.glob(path)) if Path(p).is_file()]
        return [Path(path)] if Path(path).is_file() else []
    except OSError as e:
        raise SourceError(f"{pattern!r} cannot be read: {e.strerror or e}.") from None


def _sha256(path: Path, prefix: int | None = None) -> tuple[str, str | None]:
    """The file's sha256, and that of its first ``prefix`` bytes (the size it had at the
    last fingerprint), taken on the same read: whether the file only grew since, however
    many rows it has past the cap, costs no second read."""
    h, at, head = hashlib.sha256(), 0, None
    with open(path, "rb") as f:
        while True:
            want = 1 << 20
            if prefix is not None and head is None:
                if at == prefix:
                    head = h.copy().hexdigest()
                else:
                    want = min(want, prefix - at)
            chunk = f.read(want)
            if not chunk:
                break
            h.update(chunk)
            at += len(chunk)
    return h.hexdigest(), head


@contextlib.contextmanager
def _readable(path: Path):
    """A file that went away, may not be read, or is not the Parquet or CSV its name says is
    a ``SourceError`` saying which file and why (the check records it; nothing else fails)."""
    kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
    try:
        yield
    except FileNotFoundError:
        raise SourceError(f"{path} went away while it was read.") from None
    except (OSError, ValueError) as e:  # permissions; ArrowInvalid, EmptyDataError, ParserError
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SourceError(f"{path} cannot be read as {kind}: {reason}") from None


TAIL = 1 << 16  # bytes of a CSV's end read to find its last line


def complete_csv_bytes(path: Path) -> int | None:
    """The bytes of a CSV up to its last complete line, when its last line is cut short (no
    newline after it, and fewer fields than the header: a writer still appending), else
    None. A check in the middle of a write reads the rows written whole, not a row of
    missing values that would read as a schema change."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.readline(TAIL)
        f.seek(max(0, size - TAIL))
        tail = f.read()
    if not tail or tail.endswith((b"\n", b"\r")):
        return None
    cut = tail.rfind(b"\n")
    if cut < 0 or size - len(tail) + cut + 1 <= len(header):  # only the header: no row cut
        return None

    def fields(line: bytes) -> int:
        return len(next(csv.reader([line.decode("utf-8", errors="replace").rstrip("\r\n")])))

    if fields(tail[cut + 1 :]) < fields(header):
        return size - len(tail) + cut + 1
    return None


class _Prefix(io.RawIOBase):
    """The first ``left`` bytes of an open file, as a stream pandas reads."""

    def __init__(self, f, left: int):
        self.f, self.left = f, left

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.left <= 0:
            return 0
        n = self.f.readinto(memoryview(b)[: min(len(b), self.left)]) or 0
        self.left -= n
        return n


def _read(path: Path, max_rows: int = MAX_ROWS) -> tuple[pd.DataFrame, int, bool]:
    """``(its first max_rows rows, its rows, whether it has more)``: a CSV's rows are those
    read (its complete lines, while a writer is still appending its last one); a Parquet
    file is read a row group at a time, up to the cap, and counted by its footer, so a large
    file never sits whole in memory."""
    import pandas as pd  # here, not at the top: the agent imports this module at start

    if path.suffix.lower() == ".csv":
        whole = complete_csv_bytes(path)
        if whole is None:
            frame = pd.read_csv(path, nrows=max_rows + 1)  # one more: whether there are more
        else:
            with open(path, "rb") as f:
                frame = pd.read_csv(io.BufferedReader(_Prefix(f, whole)), nrows=max_rows + 1)
        more = len(frame) > max_rows
        return (frame.iloc[:max_rows] if more else frame), min(len(frame), max_rows), more
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        total = f.metadata.num_rows
        if total <= max_rows:
            return pd.read_parquet(path), total, False
        batches, n = [], 0
        for batch in f.iter_batches(batch_size=min(max_rows, 65_536), use_pandas_metadata=True):
            batches.append(batch)
            n += len(batch)
            if n >= max_rows:
                break
        table = pa.Table.from_batches(batches, schema=f.schema_arrow).slice(0, max_rows)
    return table.to_pandas(), total, True


def capped_note(what: str, max_rows: int) -> str:
    """The one line said when a source is read only in part."""
    return (
        f"{what} has more than {max_rows:,} rows: its statistics and revalidations use the "
        f"first {max_rows:,} (c.HandoffAgent.watch_max_rows)."
    )


def schema_of(frame: pd.DataFrame) -> list[dict]:
    return [{"name": str(c), "dtype": str(t)} for c, t in frame.dtypes.items()]


def schema_hash(schema: list[dict]) -> str:
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()


def stats(frame: pd.DataFrame, edges: dict | None = None) -> dict:
    """Per column: nulls, and for numbers mean, std, min, max and a histogram over
    ``edges[col]`` (from the reference; the frame's own quantiles when there is none)."""
    out = {}
    for name, col in frame.items():
        key = str(name)
        s = {"nulls": int(col.isna().sum())}
        if col.dtype.kind in "biuf":
            values = col.to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            if finite.size:
                s.update(
                    mean=float(finite.mean()),
                    std=float(finite.std()),
                    min=float(finite.min()),
                    max=float(finite.max()),
                )
            if col.dtype.kind == "f" and s["nulls"]:  # an integer column with missing values?
                s["whole"] = bool(np.all(finite == np.floor(finite)))
            e = np.asarray(edges[key]) if edges and key in edges else drift.quantile_edges(finite)
            s["edges"] = [float(x) for x in e]
            s["hist"] = [int(x) for x in drift.histogram(finite, e)]
        else:
            counts = col.astype("string").value_counts(dropna=True)
            s["distinct"] = len(counts)
            s["top"] = {str(k): int(v) for k, v in counts.head(20).items()}
        out[key] = s
    return out


def fingerprint_files(
    pattern: str,
    edges: dict | None = None,
    prev_rows: int = 0,
    home: Path | None = None,
    max_rows: int = MAX_ROWS,
    prev_files: list[dict] | None = None,
) -> dict:
    """``prev_files``: the files of the last fingerprint; a file bigger now gets
    ``prefix_sha256``, the hash of its bytes up to its earlier size."""
    import pandas as pd

    before = {f["path"]: f.get("size") for f in prev_files or () if isinstance(f, dict)}

    paths = outside(files_of(pattern), home)
    if not paths:
        raise SourceError(f"No file matches {pattern!r}.")
    bad = [p.name for p in paths if p.suffix.lower() not in SUFFIXES]
    if bad:
        raise SourceError(f"{bad[0]} is not Parquet or CSV; a source holds .parquet or .csv files.")
    files, frames, rows, capped = [], [], 0, []
    for p in paths:
        with _readable(p):
            st = p.stat()
            size = before.get(str(p))
            grown = size if isinstance(size, int) and 0 < size < st.st_size else None
            digest, head = _sha256(p, grown)
            entry = {"path": str(p), "size": st.st_size, "mtime": st.st_mtime, "sha256": digest}
            if head is not None:
                entry["prefix_sha256"] = head
            files.append(entry)
            part, n, more = _read(p, max_rows)
        frames.append(part)
        rows += n
        if more:
            capped.append(str(p))
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    digest = hashlib.sha256("\n".join(f"{f['path']}\0{f['sha256']}" for f in files).encode())
    schema = schema_of(frame)
    for col in schema:  # a partition without a column: concatenated, it reads as blanks
        if any(col["name"] not in map(str, part.columns) for part in frames):
            col["partial"] = True  # not in every file
    return {
        "fingerprint": digest.hexdigest(),
        "size": sum(f["size"] for f in files),
        "mtime": max(f["mtime"] for f in files),
        "rows": rows,
        "schema": schema,
        "schema_hash": schema_hash(schema),
        "max_updated": None,
        "stats": stats(frame, edges),
        "capped": [capped_note(c, max_rows) for c in capped],
        "files": files,
        "row_hashes": _row_prefix(frame),
        "prefix_hash": _row_prefix(frame.iloc[:prev_rows]) if 0 < prev_rows <= len(frame) else None,
        "prefix_hash_ints": _ints_prefix(frame, prev_rows),
    }


def _ints_prefix(frame: pd.DataFrame, prev_rows: int) -> str | None:
    """The hash of the first ``prev_rows`` rows as they were read before a missing value
    among the new rows made pandas read an integer column as floats (None when no column
    was): the old rows, then new ones with a blank, are still appended."""
    if not 0 < prev_rows <= len(frame):
        return None
    prefix = frame.iloc[:prev_rows]
    ints = [
        c
        for c in frame.columns
        if frame[c].dtype.kind == "f"
        and frame[c].isna().any()
        and prefix[c].notna().all()
        and bool(np.all(prefix[c].to_numpy() == np.floor(prefix[c].to_numpy())))
    ]
    return _row_prefix(prefix.astype({c: "int64" for c in ints})) if ints else None


def _row_prefix(frame: pd.DataFrame) -> str:
    """A hash of the rows' values in order: the rows of the last fingerprint hashed again
    tell "the old rows, then new ones" (appended) from a rewrite."""
    import pandas as pd

    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashes.tobytes()).hexdigest()


def fingerprint_sql(
    url: str,
    query: str,
    edges: dict | None = None,
    home: Path | None = None,
    max_rows: int = MAX_ROWS,
) -> dict:
    """Run the query read-only; count, schema, max(updated_at) and statistics of its rows."""
    import pandas as pd

    from ..store.warehouse import QueryFailed, read_query

    outside([p for p in [sqlite_path(url)] if p is not None], home)

    try:
        rows, frame, columns, max_updated = read_query(url, query, max_rows)
    except QueryFailed as e:
        raise SourceError(str(e)) from None
    if frame.empty:
        frame = pd.DataFrame(columns=columns)
    frame = frame.infer_objects()
    for col in frame.columns:  # numeric types the driver hands back as Decimal
        if frame[col].dtype == object:
            converted = pd.to_numeric(frame[col], errors="coerce")
            if converted.notna().sum() == frame[col].notna().sum() and frame[col].notna().any():
                frame[col] = converted
    schema = [{"name": str(c), "dtype": str(frame[c].dtype)} for c in columns]
    summary = {"rows": rows, "schema": schema, "max_updated": max_updated}
    summary["content"] = _row_prefix(frame)
    return {
        "fingerprint": hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest(),
        "size": None,
        "mtime": None,
        "rows": int(rows),
        "schema": schema,
        "schema_hash": schema_hash(schema),
        "max_updated": max_updated,
        "stats": stats(frame, edges),
        "capped": [capped_note("The query's result", max_rows)] if rows > len(frame) else [],
        "row_hashes": summary["content"],
    }


def fingerprint(
    spec: dict,
    url: str | None = None,
    edges: dict | None = None,
    prev_rows: int = 0,
    home: Path | None = None,
    max_rows: int = MAX_ROWS,
    prev_files: list[dict] | None = None,
) -> dict:
    """One fingerprint of the source ``spec`` (a ``data_sources`` row); ``url``: its full SQL
    URL, decrypted by the caller; ``home``: the agent's, which no file read may lead into;
    ``max_rows``: of each file or of the query, read for statistics (``capped`` says which
    had more); ``prev_files``: the files the last fingerprint saw (whether each only grew)."""
    if spec["kind"] == "sql":
        return fingerprint_sql(url or spec["source"], spec["query"], edges, home, max_rows)
    return fingerprint_files(spec["source"], edges, prev_rows, home, max_rows, prev_files)


def frame_of(
    spec: dict, url: str | None = None, home: Path | None = None, max_rows: int = MAX_ROWS
) -> pd.DataFrame:
    """The source's rows now (at most ``max_rows`` of each file or of a query), as data: a
    revalidation hands them to the check workers."""
    import pandas as pd

    if spec["kind"] == "sql":
        from ..store.warehouse import QueryFailed, read_query

        outside([p for p in [sqlite_path(url or spec["source"])] if p is not None], home)
        try:
            frame = read_query(url or spec["source"], spec["query"], max_rows)[1]
        except QueryFailed as e:
            raise SourceError(str(e)) from None
        return frame.infer_objects()
    paths = outside(files_of(spec["source"]), home)
    if not paths:
        raise SourceError(f"No file matches {spec['source']!r}.")
    frames = []
    for p in paths:
        with _readable(p):
            frames.append(_read(p, max_rows)[0])
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def reference_edges(frame: pd.DataFrame) -> dict:
    """The bins PSI uses, fixed from the model's reference data."""
    out = {}
    for name, col in frame.items():
        if col.dtype.kind in "biuf":
            v = col.to_numpy(dtype=float)
            out[str(name)] = drift.quantile_edges(v[np.isfinite(v)])
    return out
