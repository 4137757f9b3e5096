"""One rule for a background loop whose round failed: when the database or the blob store
cannot be reached (PostgreSQL restarting, S3 down), one warning line a minute per loop while
it lasts, not a traceback every round (thousands of lines a second across the loops); any
other failure keeps its traceback. The loops go on either way."""

from __future__ import annotations

import logging
import sys
import time

EVERY = 60.0  # seconds between two warnings of one loop about the same outage
_last: dict[str, float] = {}


def outage(error: BaseException) -> bool:
    """Whether ``error`` is a dependency out of reach, which waiting will fix."""
    from .store.blobs import BlobUnavailable
    from .store.engine import unavailable

    if isinstance(error, BlobUnavailable) or unavailable(error) is not None:
        return True
    psycopg = sys.modules.get("psycopg")  # a raw connection's (the LISTEN one), if in use
    return psycopg is not None and isinstance(error, psycopg.OperationalError)


def failed_round(log: logging.Logger, what: str, *args) -> None:
    """Log the exception being handled for the loop named by ``what`` (a format string)."""
    error = sys.exc_info()[1]
    if error is None or not outage(error):
        log.exception(what, *args)
        return
    now = time.monotonic()
    if now - _last.get(what, -EVERY) < EVERY:
        return
    _last[what] = now
    lines = str(error).strip().splitlines()
    cause = lines[0][:300] if lines else type(error).__name__
    message = what % args if args else what
    log.warning("%s (%s); retrying, noted once a minute while it lasts", message, cause)
