"""The computational performance test of a deployment: load an HTTP inference URL with rows of
the evaluation sample at a few concurrency levels, then compare with production and gate.

Requests go over keep-alive HTTP/1.1 connections, one per concurrent client, written with
asyncio streams so the agent's event loop keeps answering while a test runs and the client's
own cost stays small next to the server's. Request bodies are encoded before the clock
starts. Every level is bounded in requests and in seconds, so a test always ends.

Protocols: ``v2`` (Open Inference Protocol, one tensor per column) and ``invocations``
(MLflow's ``dataframe_split``), so the same measurement runs against Handoff and MLflow.

The gate's limits and the levels come from the policy's ``[deploy.loadtest]`` table
(``max_p99_ratio``, ``min_throughput_ratio``, ``max_error_rate``, ``concurrency``,
``requests``, declared with the rest of ``[deploy]``); ``LOADTEST_DEFAULTS`` stands in for a
policy that has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from .deploy_policy import LoadTestPolicy

LOADTEST_DEFAULTS = asdict(LoadTestPolicy())  # declared once, in deploy_policy.py
LEVELS = LOADTEST_DEFAULTS["concurrency"]
PROTOCOLS = ("v2", "invocations")
MAX_HEADER = 64 << 10


# -- request bodies ---------------------------------------------------------------------------


def _v2_datatype(dtype) -> str:
    kind = getattr(dtype, "kind", "O")
    return {"b": "BOOL", "i": "INT64", "u": "UINT64", "f": "FP64"}.get(kind, "BYTES")


def plain_cell(value):
    """A JSON value for one cell: numpy scalars as Python ones, NaN, NaT and pd.NA as null,
    dates and times in ISO 8601 (what serving reads them from), anything else as text."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "isoformat"):  # a Timestamp, datetime, date or time
        return value.isoformat()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def v2_body(rows) -> bytes:
    """An Open Inference Protocol request for a DataFrame's rows: one tensor per column."""
    inputs = [
        {
            "name": str(col),
            "shape": [len(rows)],
            "datatype": _v2_datatype(rows[col].dtype),
            "data": [plain_cell(v) for v in rows[col].tolist()],
        }
        for col in rows.columns
    ]
    return json.dumps({"inputs": inputs}).encode()


def invocations_body(rows) -> bytes:
    """MLflow's ``/invocations`` body for a DataFrame's rows (``dataframe_split``)."""
    data = [[plain_cell(v) for v in rec] for rec in rows.itertuples(index=False, name=None)]
    split = {"columns": [str(c) for c in rows.columns], "data": data}
    return json.dumps({"dataframe_split": split}).encode()


def bodies(frame, protocol: str = "v2", batch: int = 1, limit: int = 1000) -> list[bytes]:
    """Encoded requests of ``batch`` rows each, from the first ``limit`` rows of ``frame``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    if len(frame) == 0:
        raise ValueError("the load test needs at least one row of the evaluation sample")
    encode = v2_body if protocol == "v2" else invocations_body
    frame = frame.iloc[: max(limit, batch)]
    return [encode(frame.iloc[i : i + batch]) for i in range(0, len(frame), batch)]


# -- a small keep-alive client ----------------------------------------------------------------


class _Connection:
    """One keep-alive HTTP/1.1 connection; reconnects after the server closes it."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str]):
        self.host, self.port, self.path = host, port, path
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\n{extra}"
        ).encode()
        self.reader = self.writer = None

    async def request(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length, chunked, close = None, False, False
        size = 0
        while True:
            line = await self.reader.readline()
            size += len(line)
            if size > MAX_HEADER:
                raise ConnectionError("response headers too large")
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                close = True
        if chunked:
            data = b""
            while True:
                n = int((await self.reader.readline()).split(b";")[0], 16)
                data += await self.reader.readexactly(n + 2)
                if n == 0:
                    break
            payload = data
        elif length is not None:
            payload = await self.reader.readexactly(length)
        else:
            payload, close = await self.reader.read(), True
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# -- results ----------------------------------------------------------------------------------


def percentile(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile, p in [0, 100]."""
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


@dataclass
class Level:
    """One concurrency level: latencies of the answered requests, and what failed."""

    concurrency: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    p50: float | None = None
    p99: float | None = None
    throughput: float = 0.0  # successful requests per second
    error_rate: float = 0.0
    first_error: str = ""
    memory_per_worker: int | None = None  # bytes, peak RSS over the serving processes


@dataclass
class LoadResult:
    url: str
    protocol: str
    batch: int
    levels: list[Level] = field(default_factory=list)

    def level(self, concurrency: int) -> Level | None:
        return next((lv for lv in self.levels if lv.concurrency == concurrency), None)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> LoadResult:
        levels = [Level(**lv) for lv in data.get("levels", [])]
        return cls(data["url"], data["protocol"], data["batch"], levels)


def rss(pids: Iterable[int]) -> int | None:
    """The largest resident set size among ``pids``, from /proc."""
    out = None
    for pid in pids:
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    value = int(line.split()[1]) * 1024
                    out = value if out is None else max(out, value)
    return out


# -- the run ----------------------------------------------------------------------------------


async def _level(
    conns: list[_Connection],
    payloads: list[bytes],
    requests: int,
    max_seconds: float,
    timeout: float,
) -> Level:
    level = Level(len(conns))
    latencies: list[float] = []
    issued = 0
    deadline = time.perf_counter() + max_seconds

    async def client(conn: _Connection) -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < deadline:
            body = payloads[issued % len(payloads)]
            issued += 1
            t0 = time.perf_counter()
            try:
                status, answer = await asyncio.wait_for(conn.request(body), timeout)
            except TimeoutError:  # before OSError, its base class
                status, conn_error = 0, f"no answer within {timeout:g} s"
                conn.close()
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
                status, conn_error = 0, f"{type(e).__name__}: {e}"
                conn.close()
            else:
                conn_error = f"HTTP {status}: {answer[:300].decode(errors='replace')}"
            elapsed = time.perf_counter() - t0
            if 200 <= status < 300:
                latencies.append(elapsed)
            else:
                level.errors += 1
                level.first_error = level.first_error or conn_error

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    level.seconds = time.perf_counter() - t0
    level.requests = issued
    level.p50 = percentile(latencies, 50)
    level.p99 = percentile(latencies, 99)
    level.throughput = len(latencies) / level.seconds if level.seconds > 0 else 0.0
    level.error_rate = level.errors / issued if issued else 0.0
    return level


async def run(
    url: str,
    frame,
    *,
    protocol: str = "v2",
    levels: Iterable[int] = LEVELS,
    requests: int = 400,
    warmup: int = 20,
    max_seconds: float = 20.0,
    timeout: float = 10.0,
    batch: int = 1,
    headers: dict[str, str] | None = None,
    worker_pids: Callable[[], Iterable[int]] | None = None,
) -> LoadResult:
    """Load ``url`` with rows of ``frame`` at each concurrency level: ``requests`` requests
    (or ``max_seconds``, whichever ends first) after ``warmup`` untimed ones. ``worker_pids``
    names the serving processes whose memory to report."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"the load test needs an http:// URL, not {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    port = parts.port or 80
    payloads = bodies(frame, protocol, batch)
    result = LoadResult(url, protocol, batch)
    for concurrency in levels:
        conns = [_Connection(parts.hostname, port, path, headers or {}) for _ in range(concurrency)]
        try:
            if warmup:
                await _level(conns, payloads, warmup, max_seconds, timeout)
            level = await _level(conns, payloads, requests, max_seconds, timeout)
        finally:
            for c in conns:
                c.close()
        if worker_pids is not None:
            level.memory_per_worker = rss(worker_pids())
        result.levels.append(level)
    return result


async def run_pair(
    candidate_url: str,
    production_url: str | None,
    frame,
    policy=None,
    *,
    levels: Iterable[int] | None = None,
    candidate_pids: Callable[[], Iterable[int]] | None = None,
    production_pids: Callable[[], Iterable[int]] | None = None,
    **options,
) -> dict:
    """The deploy test: the candidate and production loaded in one run, alternating level by
    level so that a change in the machine's load hits both alike; then ``compare`` and ``gate``.
    ``production_url`` None is a first deployment. ``levels`` and ``requests`` default to the
    policy's ``concurrency`` and ``requests``; other ``options`` go to ``run``. JSON-able."""
    table = settings(policy)
    options.setdefault("requests", int(table["requests"]))
    candidate = production = None
    for concurrency in levels or table["concurrency"]:
        one = await run(
            candidate_url, frame, levels=(concurrency,), worker_pids=candidate_pids, **options
        )
        candidate = one if candidate is None else candidate
        if one is not candidate:
            candidate.levels += one.levels
        if production_url:
            other = await run(
                production_url,
                frame,
                levels=(concurrency,),
                worker_pids=production_pids,
                **options,
            )
            production = other if production is None else production
            if other is not production:
                production.levels += other.levels
    comparison = compare(candidate, production)
    return {
        "candidate": candidate.to_json(),
        "production": production.to_json() if production else None,
        "comparison": comparison,
        "gate": gate(comparison, policy),
    }


# -- comparison and gate ----------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def compare(candidate: LoadResult, production: LoadResult | None) -> dict:
    """Candidate over production at each concurrency level both ran, and the worst of them:
    ``p99_ratio`` (higher is worse), ``throughput_ratio`` (lower is worse). Without a
    production (a first deployment) the ratios are None; the error rates still count."""
    out: dict = {"levels": {}, "worst": {}}
    p99s, tps = [], []
    for lv in candidate.levels:
        prod = production.level(lv.concurrency) if production else None
        row = {
            "p50_ratio": _ratio(lv.p50, prod.p50) if prod else None,
            "p99_ratio": _ratio(lv.p99, prod.p99) if prod else None,
            "production_p99_ms": prod.p99 * 1000 if prod and prod.p99 is not None else None,
            "p99_ms": lv.p99 * 1000 if lv.p99 is not None else None,
            "throughput_ratio": _ratio(lv.throughput, prod.throughput) if prod else None,
            "error_rate": lv.error_rate,
            "production_error_rate": prod.error_rate if prod else None,
        }
        out["levels"][str(lv.concurrency)] = row
        if row["p99_ratio"] is not None:
            p99s.append(row["p99_ratio"])
        if row["throughput_ratio"] is not None:
            tps.append(row["throughput_ratio"])
    out["worst"] = {
        "p99_ratio": max(p99s) if p99s else None,
        "throughput_ratio": min(tps) if tps else None,
        "error_rate": max((lv.error_rate for lv in candidate.levels), default=0.0),
    }
    return out


def gate(comparison: dict, policy) -> dict:
    """Apply the policy's ``[deploy]`` limits (``max_p99_ratio`` beyond ``p99_slack_ms``,
    ``min_throughput_ratio``, ``max_error_rate``) to ``compare``'s answer:
    ``{"verdict": "pass"|"fail", "failed" (the keys crossed), "reasons"}``.
    ``policy``: see ``settings``."""
    table = settings(policy)
    worst, reasons, failed = comparison["worst"], [], []
    limits = {
        k: float(table[k]) for k in ("max_p99_ratio", "min_throughput_ratio", "max_error_rate")
    }
    if worst["error_rate"] > limits["max_error_rate"]:
        failed.append("max_error_rate")
        reasons.append(
            f"error rate {worst['error_rate']:.2%} is over max_error_rate "
            f"{limits['max_error_rate']:.2%}"
        )
    slack, most = float(table["p99_slack_ms"]), limits["max_p99_ratio"]

    def beyond(lv: dict) -> float | None:
        """ms past what the ratio allows (None: not measured in ms)"""
        if lv.get("p99_ms") is None or lv.get("production_p99_ms") is None:
            return None
        return lv["p99_ms"] - most * lv["production_p99_ms"]

    slower = [  # over the ratio, and by more than the machine's jitter
        lv
        for lv in comparison.get("levels", {}).values()
        if (lv.get("p99_ratio") or 0) > most and (beyond(lv) is None or beyond(lv) > slack)
    ]
    if slower:
        worse = max(slower, key=lambda lv: lv["p99_ratio"])
        failed.append("max_p99_ratio")
        by = f" (by {beyond(worse):.1f} ms)" if beyond(worse) is not None else ""
        reasons.append(
            f"p99 is {worse['p99_ratio']:.2f}x production's, over max_p99_ratio {most:g}{by}"
        )
    tp = worst["throughput_ratio"]
    if tp is not None and tp < limits["min_throughput_ratio"]:
        failed.append("min_throughput_ratio")
        reasons.append(
            f"throughput is {tp:.2f}x production's, under min_throughput_ratio "
            f"{limits['min_throughput_ratio']:g}"
        )
    notes = [] if worst["p99_ratio"] is not None else ["no production to compare with"]
    return {
        "verdict": "fail" if reasons else "pass",
        "failed": failed,  # the policy keys whose limit was crossed
        "reasons": reasons,
        "notes": notes,
        "limits": limits,
        "worst": worst,
    }


def settings(policy) -> dict:
    """The ``[deploy.loadtest]`` settings over ``LOADTEST_DEFAULTS``. ``policy`` is a Policy or
    its ``deploy`` part (an object with a ``loadtest`` table, or a mapping with a
    ``"loadtest"`` sub-table), the table itself (an object or a mapping), or None."""
    table = getattr(policy, "deploy", policy)
    if isinstance(table, dict):
        table = table.get("loadtest", table)
    elif table is not None and hasattr(table, "loadtest"):
        table = table.loadtest
    out = {}
    for key, default in LOADTEST_DEFAULTS.items():
        if isinstance(table, dict):
            out[key] = table.get(key, default)
        else:
            out[key] = getattr(table, key, default) if table is not None else default
    out["concurrency"] = tuple(int(c) for c in out["concurrency"])
    return out
