"""Appending past the page cache: what is written reads back whole, however the chunks fall
around the switch, and where the filesystem refuses a direct write nothing is lost."""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os

import pytest

from handoff_agent import writeback
from handoff_agent.writeback import ALIGN, DirectAppender

MIB = 1 << 20
# odd sizes, so the switch and the stage's edges fall inside chunks
SIZES = [1, ALIGN - 1, 70_001, MIB + 3, 5, 2 * MIB - 7, ALIGN, 3 * MIB + 11, 9]


def chunks() -> list[bytes]:
    return [os.urandom(n) for n in SIZES]


def direct_on(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


def append_all(path, parts, direct_from: int, after_each=None) -> DirectAppender:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        out = DirectAppender(fd, direct_from)
        for part in parts:
            out.write(part)
            if after_each is not None:
                after_each(fd, out)
        out.close()
        os.fsync(fd)
        assert not direct_on(fd)  # the file is left as it was opened
        return out
    finally:
        os.close(fd)


@pytest.mark.parametrize("direct_from", [0, 1, 70_000, 3 * MIB + 5, 10**9])
def test_what_is_appended_reads_back_whole(tmp_path, direct_from):
    parts = chunks()
    seen = []
    out = append_all(tmp_path / "f", parts, direct_from, lambda fd, o: seen.append(direct_on(fd)))
    data = b"".join(parts)
    assert (tmp_path / "f").read_bytes() == data
    assert out.size == len(data)
    if direct_from < len(data) - DirectAppender.STAGE:
        assert any(seen), "past direct_from the file is written around the page cache"
    else:
        assert not any(seen)


def aligned(data: bytes) -> memoryview:
    """``data`` at the start of a page, as an upload's receive buffer holds it."""
    buf = mmap.mmap(-1, max(len(data), 1))
    buf[: len(data)] = data
    return memoryview(buf)[: len(data)]


@pytest.mark.parametrize("direct_from", [0, 70_000, 3 * MIB])
def test_page_aligned_chunks_are_written_as_they_are_and_read_back_whole(tmp_path, direct_from):
    """An upload's chunks sit in page-aligned buffers: whole pages go to the disk without
    the copy into the stage, a ragged one is staged, and the bytes read back in order."""
    sizes = [MIB, MIB, 70_001, MIB, ALIGN, 5, 2 * MIB, MIB - 3]
    parts = [os.urandom(n) for n in sizes]
    views = [aligned(p) if i % 4 != 3 else p for i, p in enumerate(parts)]  # some plain bytes
    seen = []
    out = append_all(tmp_path / "f", views, direct_from, lambda fd, o: seen.append(direct_on(fd)))
    data = b"".join(parts)
    assert (tmp_path / "f").read_bytes() == data
    assert out.size == len(data) and any(seen)


def test_a_refused_direct_write_goes_through_the_page_cache(tmp_path, monkeypatch):
    """ext4 refuses a direct write whose length is off the block size: a stage of 1,000
    bytes is, so the first direct write fails, and the rest is written as any write is."""
    monkeypatch.setattr(DirectAppender, "STAGE", 1000)
    parts = chunks()
    seen = []
    append_all(tmp_path / "f", parts, 0, lambda fd, o: seen.append(direct_on(fd)))
    assert (tmp_path / "f").read_bytes() == b"".join(parts)
    assert not seen[-1]


def resident(path) -> int:
    """How many of a file's pages are in the page cache (mincore on a mapping of it)."""
    size, page = os.path.getsize(path), mmap.PAGESIZE
    vec = (ctypes.c_ubyte * ((size + page - 1) // page))()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as mm:
        start = ctypes.c_char.from_buffer(mm)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.mincore(ctypes.c_void_p(ctypes.addressof(start)), ctypes.c_size_t(size), vec):
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            del start  # the mapping cannot close while it is exported
    return sum(v & 1 for v in vec)


@pytest.mark.parametrize("head", [0, writeback.CACHED_HEAD])
def test_a_reader_drops_what_it_has_read_past_the_cached_head(tmp_path, monkeypatch, head):
    """Read as the agent reads a spool entry: past the head, the windows two behind the reader
    leave the page cache (their pages then hold the next ones); the head stays for the checks."""
    monkeypatch.setattr(writeback, "CACHED_HEAD", head)
    window = writeback.DROP_WINDOW
    path = tmp_path / "entry"
    path.write_bytes(os.urandom(6 * window))
    with open(path, "rb+") as f:
        os.fsync(f.fileno())  # clean pages: written back, as an entry's are by then
    pages = 6 * window // mmap.PAGESIZE
    assert resident(path) == pages
    fd = os.open(path, os.O_RDONLY)
    try:
        at = 0
        while chunk := os.read(fd, MIB):
            writeback.drop_behind(fd, at, at + len(chunk))
            at += len(chunk)
    finally:
        os.close(fd)
    kept = resident(path)
    if head == 0:
        assert kept <= pages // 3 + 16, "windows 0-3 of 6 are dropped behind the reader"
    else:
        assert kept == pages, "a bundle within the cached head stays for its checks"
