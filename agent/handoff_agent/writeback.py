"""Durable writes that do not wait for the disk all at once at the end.

Its own module so that the kernel, which writes a bundle into the agent's spool, imports it
without the blob store.
"""

from __future__ import annotations

import contextlib
import os


def start_write_back(fd: int, start: int, length: int) -> None:
    """Start writing a written range of a file to disk without waiting, so that the fsync
    that makes it durable has little left to do (the page cache would otherwise hold it all
    until then). Linux starts the write-back of the dirty pages it is advised to drop, and
    keeps them while they are dirty; without posix_fadvise this does nothing."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, start, length, os.POSIX_FADV_DONTNEED)
