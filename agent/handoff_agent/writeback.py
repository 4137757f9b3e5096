"""Durable writes that do not wait for the disk all at once at the end.

Its own module so that the kernel, which writes a bundle into the agent's spool, imports it
without the blob store.
"""

from __future__ import annotations

import contextlib
import errno
import os

CACHED_HEAD = 64 << 20  # a bundle's first bytes stay in the page cache: its checks read them next
DROP_WINDOW = 8 << 20


def drop_behind(fd: int, before: int, after: int) -> None:
    """For a reader that has read a file from ``before`` to ``after`` bytes as another process
    writes it: past ``CACHED_HEAD``, drop from the page cache the window two behind the one
    just read (written back by now), so that its pages hold the next ones. A page cache that
    takes a fresh page for every byte cost the writer 1.2-3.1 s of system time per GiB on
    this VM (pages it faults in); dropped behind the reader, 0.3 s, and a 1 GiB spool entry
    went from 335-799 to 1,340-1,411 MB/s."""
    if before // DROP_WINDOW != after // DROP_WINDOW:
        start = after // DROP_WINDOW * DROP_WINDOW - 3 * DROP_WINDOW
        if start >= CACHED_HEAD:
            start_write_back(fd, start, DROP_WINDOW)  # dropped if clean, else written back


def write_all(fd: int, part) -> None:
    """All of ``part`` into ``fd`` (os.write may take less than it is given)."""
    view = memoryview(part)
    while view:
        view = view[os.write(fd, view) :]


def start_write_back(fd: int, start: int, length: int) -> None:
    """Start writing a written range of a file to disk without waiting, so that the fsync
    that makes it durable has little left to do (the page cache would otherwise hold it all
    until then). Linux starts the write-back of the dirty pages it is advised to drop, and
    keeps them while they are dirty; without posix_fadvise this does nothing."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, start, length, os.POSIX_FADV_DONTNEED)


ALIGN = 4096  # O_DIRECT wants offsets, lengths and buffers on the disk's block size


class DirectAppender:
    """Appends to a file opened for writing, past ``direct_from`` bytes without the page
    cache (O_DIRECT), from one page-aligned buffer (or from the chunk itself, when it is one:
    an upload read into page-aligned buffers). Written through the page cache, a 1 GiB
    upload cost its writing thread 1.6-3.3 s of system time here (fresh pages the VM faults
    in, write-back started from that thread): the upload's bottleneck on two cores. Written
    directly, 0.1-0.2 s, at the disk's own pace. Where the filesystem refuses O_DIRECT, the
    bytes go through the page cache as before. ``close`` writes what is staged; the caller
    fsyncs, as after any write."""

    STAGE = 1 << 20

    def __init__(self, fd: int, direct_from: int):
        self.fd, self.direct_from, self.size = fd, direct_from, 0
        self._stage: memoryview | None = None  # a page-aligned buffer once writing directly
        self._staged = 0
        self._refused = not hasattr(os, "O_DIRECT")

    def write(self, data) -> None:
        view = memoryview(data).cast("B")
        if self._stage is None and not self._refused and self.size + len(view) > self.direct_from:
            head = max(0, self.direct_from - self.size)
            head += -(self.size + head) % ALIGN  # buffered up to an aligned offset
            self._buffered(view[:head])
            view = view[head:]
            self._start_direct()
        if self._stage is not None and not self._staged and _whole_pages(view):
            self._direct(view)  # a page-aligned buffer (an upload's): no copy into the stage
            return
        while view and self._stage is not None:
            n = min(len(view), self.STAGE - self._staged)
            self._stage[self._staged : self._staged + n] = view[:n]
            self._staged += n
            view = view[n:]
            if self._staged == self.STAGE:
                self._flush_stage()
        self._buffered(view)  # below direct_from, or refused: as any write

    def close(self) -> None:
        """Write what is staged (its unaligned end through the page cache)."""
        if self._stage is not None:
            staged = self._stage[: self._staged]
            self._stage, self._staged = None, 0
            self._set_direct(False)
            self._buffered(staged)

    def _buffered(self, view) -> None:
        write_all(self.fd, view)
        self.size += len(view)

    def _start_direct(self) -> None:
        import mmap

        try:
            self._set_direct(True)
        except OSError:
            self._refused = True
            return
        self._stage = memoryview(mmap.mmap(-1, self.STAGE))  # mmap memory is page-aligned

    def _flush_stage(self) -> None:
        self._staged = 0
        self._direct(self._stage)

    def _direct(self, view) -> None:
        """``view`` (page-aligned, whole pages) to the disk around the page cache."""
        try:
            n = os.write(self.fd, view)
        except OSError as e:  # some filesystems take the flag and refuse the write
            if e.errno != errno.EINVAL:
                raise
            n = 0
        self.size += n
        if n < len(view):  # refused, or short: the rest, and all after it, through the cache
            self._stage, self._staged, self._refused = None, 0, True
            self._set_direct(False)
            self._buffered(view[n:])

    def _set_direct(self, on: bool) -> None:
        import fcntl  # here: a kernel on a system without it never writes directly

        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)


def _whole_pages(view: memoryview) -> bool:
    """True when ``view`` starts on a page and holds whole pages: O_DIRECT takes it as it is.
    Only a writable buffer's address can be read (ctypes); bytes are always staged."""
    if not view or len(view) % ALIGN or view.readonly:
        return False
    import ctypes  # here: only an agent writing an upload's pooled buffers gets this far

    return ctypes.addressof(ctypes.c_char.from_buffer(view)) % ALIGN == 0
