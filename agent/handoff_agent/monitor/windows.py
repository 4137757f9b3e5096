"""Window boundaries in UTC: hourly, daily and calendar-monthly windows, and the rolling one.
A window is ``[start, end)`` in epoch seconds; it is closed once ``now >= end``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

LENGTH = {"hourly": 3600.0, "daily": 86400.0}
EARLIEST = 946_684_800.0  # 2000-01-01: no prediction Handoff monitors was served before
AHEAD = 7 * 86400.0  # how far past the clock an imported log's times may go
# How far past the agent's clock a run's ``now`` may go: two machines' clocks disagree by
# that much at most (Kerberos' default skew). A later ``now`` would store windows as closed
# that have not closed, judged on part of their traffic and never judged again.
SKEW = 300.0


def in_range(t, now: float, ahead: float = AHEAD):
    """Whether ``t`` (a time, or a numpy array of them: then element-wise) lies within what
    monitoring evaluates: every window from 2000 to a week past the clock is a few thousand
    hourly ones; a year 9999 would be millions. NaN is out of range."""
    return (t >= EARLIEST) & (t <= now + ahead)


def span_text(ahead: float = AHEAD) -> str:
    return f"between 2000-01-01 and {int(ahead // 86400)} days from now"


def now_span_text() -> str:
    """What a run's ``now`` may be: not the imported log's week ahead (``span_text``), which
    ``not_after_clock`` refuses anyway."""
    return f"between 2000-01-01 and the agent's clock ({SKEW:g} s allowed for skew)"


def not_after_clock(now: float, clock: float) -> None:
    """Refuse a run's ``now`` later than ``clock`` (the evaluating agent's) plus ``SKEW``:
    the API's 400 and ``monitor run --now``'s one line."""
    if now > clock + SKEW:
        from ..errors import BadRequest

        raise BadRequest(
            f"now {_when(now)} is later than the agent's clock "
            f"({readable(clock, seconds=True)}, {SKEW:g} s allowed for skew): its windows "
            "have not closed yet.",
            "Give a time up to the agent's clock, or leave now out to use the clock.",
            code="now_in_future",
        )


def _when(t: float) -> str:
    """A time to the second, or past the year 9999 as epoch seconds (1e12)."""
    return readable(t, seconds=True) if t < 253_402_300_800 else f"{t:g} (epoch seconds)"


def floor(kind: str, t: float) -> float:
    if kind in LENGTH:
        return (t // LENGTH[kind]) * LENGTH[kind]
    d = datetime.fromtimestamp(t, UTC)
    return datetime(d.year, d.month, 1, tzinfo=UTC).timestamp()


def following(kind: str, start: float) -> float:
    if kind in LENGTH:
        return start + LENGTH[kind]
    d = datetime.fromtimestamp(start, UTC)
    return datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=UTC).timestamp()


def closed(kind: str, first: float, now: float) -> list[tuple[float, float]]:
    """Every closed window of ``kind`` from the one holding ``first`` to the last ending by
    ``now``."""
    out, start = [], floor(kind, first)
    while True:
        end = following(kind, start)
        if end > now:
            return out
        out.append((start, end))
        start = end


def iso(t: float) -> str:
    """The store's time format (``audit.now``), so times compare as text too."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")


def readable(t: float, seconds: bool = False) -> str:
    """A window's start (or a clock, to the second) in a sentence people read."""
    shape = "%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC"
    return datetime.fromtimestamp(t, UTC).strftime(shape)


def days(n: float) -> timedelta:
    return timedelta(days=n)
