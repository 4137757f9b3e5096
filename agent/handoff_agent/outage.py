"""One rule for a background loop whose round failed: when the database or the blob store
cannot be reached (PostgreSQL restarting, S3 down), one warning line a minute per loop while
it lasts, not a traceback every round (thousands of lines a second across the loops); any
other failure keeps its traceback. The loops go on either way. And one rule for an outcome
that must be written (a check's result, a delivery made): tried again until it is.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable

from .disk_room import out_of_space

EVERY = 60.0  # seconds between two warnings of one loop about the same outage
_last: dict[str, float] = {}
log = logging.getLogger(__name__)
# An outcome that cannot be recorded yet (a full disk, a locked database) is tried again
# after these pauses (seconds, doubling), for as long as the agent runs.
RECORD_RETRY_FIRST, RECORD_RETRY_CAP = 0.5, 10.0


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


async def until_recorded(what: str, call: Callable[[], Awaitable]):
    """``await call()``, again and again while it fails for want of room (a full disk), a
    busy database or an unreachable blob store: the outcome waits in memory, and nothing is
    left half done for good (a version checking, a delivery made but not recorded). Any
    other error is raised."""
    pause = RECORD_RETRY_FIRST
    while True:
        try:
            return await call()
        except Exception as e:
            if out_of_space(e) is None and not outage(e):
                raise
            first = str(e).splitlines()[0][:200]
            log.warning("%s could not be recorded (%s); again in %.1f s", what, first, pause)
        await asyncio.sleep(pause)
        pause = min(2 * pause, RECORD_RETRY_CAP)
