"""Shared traitlets validators for settings the agent cannot run with: a value that would
spin a core (a poll interval of 0), refuse every push (a bundle size of 0) or listen where
nobody finds it (an empty ip). Each stops ``serve`` with one line naming the setting.

    class Serving(Configurable):
        _positive = positive("poll_interval", "tick_seconds")
"""

from __future__ import annotations

import math

from traitlets import TraitError, validate

MIN_WORKER_MEMORY = 256 << 20  # an address-space limit below this fails every worker's imports
MEMORY_WHY = "256 MiB; a worker's Python and NumPy need more"


def _name(proposal) -> str:
    trait = proposal["trait"]
    return f"c.{trait.this_class.__name__}.{trait.name}"


def _shown(value) -> str:
    """-1.0 as -1; a byte count in full."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _finite(proposal, value) -> None:
    """inf and nan pass every comparison check one way or the other, then break the agent
    where it turns them into an integer (a busy timeout in milliseconds) or a deadline."""
    if isinstance(value, float) and not math.isfinite(value):
        raise TraitError(f"{_name(proposal)} must be a finite number, not {_shown(value)}.")


def positive(*names: str):
    """Numbers (or each number of a list) that must be more than 0."""

    @validate(*names)
    def _check(self, proposal):
        value = proposal["value"]
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            _finite(proposal, v)
        bad = [v for v in values if not v > 0]
        if bad:
            raise TraitError(f"{_name(proposal)} must be more than 0, not {_shown(bad[0])}.")
        return value

    return _check


def at_least(minimum: int, why: str, *names: str):
    """Numbers that must be at least ``minimum`` (``why`` says what less would do)."""

    @validate(*names)
    def _check(self, proposal):
        value = proposal["value"]
        if value is not None:
            _finite(proposal, value)
        if value is not None and value < minimum:  # None: a default still to be worked out
            raise TraitError(
                f"{_name(proposal)} must be at least {minimum} ({why}), not {_shown(value)}."
            )
        return value

    return _check


def between(low: float, high: float, *names: str):
    """Numbers from ``low`` to ``high``, both allowed (a share, a rate)."""

    @validate(*names)
    def _check(self, proposal):
        value = proposal["value"]
        _finite(proposal, value)
        if not low <= value <= high:
            raise TraitError(
                f"{_name(proposal)} must be from {_shown(low)} to {_shown(high)}, "
                f"not {_shown(value)}."
            )
        return value

    return _check


def port_number(*names: str):
    @validate(*names)
    def _check(self, proposal):
        value = proposal["value"]
        if not 0 <= value <= 65535:
            raise TraitError(
                f"{_name(proposal)} must be a port from 0 to 65535 (0 picks a free one), "
                f"not {value}."
            )
        return value

    return _check


def interface(*names: str):
    """An address to bind: empty would listen on every interface under a URL nobody can use."""

    @validate(*names)
    def _check(self, proposal):
        value = proposal["value"]
        if not value.strip():
            raise TraitError(
                f"{_name(proposal)} is empty: give the interface to listen on, e.g. 127.0.0.1 "
                "(or 0.0.0.0 for every interface)."
            )
        return value

    return _check
