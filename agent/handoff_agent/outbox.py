"""The outbox's retry policy. Rows are written in the transaction of the verdict (or of a
forced forward) and leave only as delivered or dead, never lost; they live in the metadata
store (``store/outbox.py``)."""

from __future__ import annotations

import random

# A delivery waits (pending: tried again at next_try) until it is delivered or dead (refused
# for good, with the reason; a forced forward sends the version again).
STATES = ("pending", "delivered", "dead")


MAX_RETRY_AFTER = 86_400.0  # a destination's Retry-After is honoured up to a day


def backoff(attempts: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential with full jitter up to the cap, or the destination's Retry-After when it
    asks for longer: a central over its hourly limit is not sent the body again every few
    minutes. (A forced forward tries a waiting delivery at once.)"""
    delay = min(random.uniform(0.5, 1.0) * base * 2 ** min(attempts, 30), cap)
    if retry_after is not None:
        delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
    return delay
