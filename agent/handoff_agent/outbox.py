"""The outbox's retry policy. Rows are written in the transaction of the verdict (or of a
forced forward) and leave only as delivered or dead, never lost; they live in the metadata
store (``store/outbox.py``)."""

from __future__ import annotations

import random

# A delivery waits (pending: tried again at next_try) until it is delivered or dead (refused
# for good, with the reason; a forced forward sends the version again).
STATES = ("pending", "delivered", "dead")


def backoff(attempts: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential with full jitter, at least Retry-After, never above the cap."""
    delay = random.uniform(0.5, 1.0) * base * 2 ** min(attempts, 30)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cap)
