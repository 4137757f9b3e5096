"""Room on the agent's disk: bytes it cannot keep are refused, never half-stored.

A bundle whose declared size would leave less than the reserve free (the database, reports
and check results need room too) is refused before a byte of it is stored, and a disk that
fills anyway (another writer, a chunked upload, the database) is refused the same way: one
``DiskFull`` (503 ``disk_full`` with Retry-After), nothing stored, nothing lost."""

from __future__ import annotations

import errno

from .errors import DiskFull

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
HINT = (
    "Nothing was stored. Free room on the agent's disk (`jupyter handoff prune --keep 5` "
    "removes old versions' bundles nothing needs) or lower c.HandoffAgent.min_free_space; "
    "then push again. A delivery waits in its sender's outbox and is retried."
)


def disk_full(role: str, detail: str = "", retry_after: int | None = None) -> DiskFull:
    """``role``: the agent's (central, or the analyst's local agent), so a forward's line in
    the notebook says whose disk it is; ``retry_after``: seconds a sender is asked to wait."""
    who = "Central's" if role == "central" else "The local agent's"
    full = DiskFull(f"{who} disk is full{detail}.", HINT)
    if retry_after is not None:
        full.retry_after = retry_after
    return full


def out_of_space(
    error: BaseException, role: str = "local", retry_after: int | None = None
) -> DiskFull | None:
    """The answer an error deserves when it is the disk running out (a write's ENOSPC or
    EDQUOT, SQLite's SQLITE_FULL, PostgreSQL's disk_full), else None."""
    if isinstance(error, OSError) and error.errno in NO_SPACE:
        return disk_full(role, retry_after=retry_after)
    orig = getattr(error, "orig", None)  # a database driver's error, under SQLAlchemy's
    if orig is not None and (
        "database or disk is full" in str(orig).lower()
        or getattr(orig, "sqlstate", None) == "53100"
    ):
        return disk_full(role, " (its database could not grow)", retry_after)
    return None


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


class DiskRoom:
    """``store``: the blob store (``free_bytes`` where its writers spool); ``reserve``: the
    bytes to leave free, 0 to let any bundle try; ``role``: the agent's; ``retry_after``: the
    seconds a refused sender is asked to wait."""

    def __init__(self, store, reserve: int, role: str, retry_after: int | None = None):
        self.store, self.reserve, self.role = store, reserve, role
        self.retry_after = retry_after

    def check(self, size: int | None) -> None:
        """Refuse ``size`` more bytes (None: unknown yet) when they would not leave the
        reserve free."""
        if not self.reserve or size is None:
            return
        free = self.store.free_bytes()
        if size + self.reserve > free:
            raise disk_full(
                self.role,
                f": {mib(free)} free, and this bundle needs {mib(size)} with "
                f"{mib(self.reserve)} kept free",
                self.retry_after,
            )

    def state(self) -> str:
        """'ok', 'low' (less than twice the reserve free) or 'full' (less than the reserve):
        what the health check says, for a probe to alert on before pushes are refused."""
        free = self.store.free_bytes()
        if free <= self.reserve:
            return "full"
        return "low" if free < 2 * self.reserve else "ok"
