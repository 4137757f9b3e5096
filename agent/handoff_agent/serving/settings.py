"""``c.Serving.*``: the model server's settings (traitlets, each with help)."""

from __future__ import annotations

from traitlets import Bool, Float, Integer, Unicode
from traitlets.config import Configurable

from ..trait_checks import (
    MEMORY_WHY,
    MIN_WORKER_MEMORY,
    at_least,
    between,
    interface,
    port_number,
    positive,
)


class Serving(Configurable):
    """The model server that the central agent starts beside its API."""

    enabled = Bool(
        True,
        help="Central only: start the model server (Open Inference Protocol V2 and MLflow "
        "/invocations) with the central agent. A local agent never serves models.",
    ).tag(config=True)
    ip = Unicode("127.0.0.1", help="Interface the model server binds.").tag(config=True)
    port = Integer(0, help="Port of the model server. 0 picks a free port.").tag(config=True)
    workers = Integer(
        2,
        help="Worker processes per loaded version. Each holds the model in its own sandboxed "
        "process; a worker that dies is restarted and its requests go to another one.",
    ).tag(config=True)
    max_test_slots = Integer(
        16,
        help="Most test slots (validated versions, reachable by number) loaded at once, the "
        "newest first: each holds its workers' memory, and analysts may push many models. An "
        "older one answers 503 saying so; canary, shadow and production always load. At "
        "least 1: each validation load-tests its version in a test slot.",
    ).tag(config=True)
    max_rows = Integer(10_000, help="Most rows one prediction request may carry.").tag(config=True)
    max_body_bytes = Integer(
        32 << 20, help="Largest prediction request body, in bytes (413 beyond it)."
    ).tag(config=True)
    request_timeout = Float(
        30.0,
        help="Seconds a worker may take to answer one request; past that the worker is "
        "killed and restarted, and the request answered 503.",
    ).tag(config=True)
    load_timeout = Float(120.0, help="Seconds a worker may take to start and load its model.").tag(
        config=True
    )
    worker_memory_limit = Integer(
        4 << 30, help="Address-space limit (RLIMIT_AS) of a serving worker, in bytes."
    ).tag(config=True)
    sticky_header = Unicode(
        "X-Handoff-Key",
        help="Request header whose value pins a caller to one version: the same key always "
        "gets the same slot while the split is unchanged (a stable hash, not a cookie).",
    ).tag(config=True)
    sample_rate = Float(
        1.0,
        help="Share of requests written to the prediction log, 0..1. Shadow and failed "
        "requests are sampled the same way.",
    ).tag(config=True)
    retention_bytes = Integer(
        1 << 30,
        help="Most bytes of prediction-log segments kept per model; the oldest segments go first.",
    ).tag(config=True)
    log_flush_seconds = Float(
        1.0,
        help="Seconds between prediction-log flushes. A crash of the central agent loses at "
        "most this long of log (a worker's crash loses nothing: the log is written here).",
    ).tag(config=True)
    log_segment_rows = Integer(
        50_000, help="Rows after which a prediction-log segment is flushed at once."
    ).tag(config=True)
    poll_interval = Float(
        0.5,
        help="Seconds between reads of the slot table, so that a change made by another "
        "replica (or the CLI) reaches this server.",
    ).tag(config=True)
    tick_seconds = Float(
        1.0,
        help="Seconds between guardrail ticks: each stores this replica's traffic stats and "
        "judges every canary on all replicas' stats, so an alarm rolls back within one tick.",
    ).tag(config=True)

    _ip = interface("ip")
    _port = port_number("port")
    _positive = positive(
        *("poll_interval", "tick_seconds", "log_flush_seconds", "workers", "max_rows"),
        *("max_body_bytes", "request_timeout", "load_timeout", "log_segment_rows"),
        "retention_bytes",
    )
    _memory = at_least(MIN_WORKER_MEMORY, MEMORY_WHY, "worker_memory_limit")
    _sample_rate = between(0, 1, "sample_rate")
    # 0 left every test slot unloaded, so that every validation's load test failed
    _test_slots = at_least(1, "validation load-tests each version in a test slot", "max_test_slots")
