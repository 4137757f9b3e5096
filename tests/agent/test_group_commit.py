"""Group commit: writes queued while a commit runs go in together; one that fails is undone
alone, the others commit; a commit that fails fails every caller in it; every answer comes
after the commit, so what a caller was told is on disk in a fresh connection."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from handoff_agent.errors import Conflict
from handoff_agent.group_commit import GroupCommit
from handoff_agent.store.metadata import MetadataStore


def run_alone(make):
    """``asyncio.run`` in a thread of its own: a loop another test left running on this
    worker's thread must not decide this test."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def manifest(name: str) -> dict:
    return {"format_version": 1, "name": name, "serialization": "skops", "flavor": "sklearn"}


@pytest.fixture
def store(tmp_path, backend):
    s = MetadataStore.for_home(tmp_path, backend.database_url() or "")
    s.url_for_tests = str(s.engine.url.render_as_string(hide_password=False))
    yield s
    s.close()


def test_queued_writes_share_a_commit_and_a_failure_is_undone_alone(store):
    pool = ThreadPoolExecutor(1)
    group = GroupCommit(store, pool)
    gate = threading.Event()

    def push(i: int):
        if i == 0:
            gate.wait(10)  # holds the first batch while the others queue
        if i == 3:
            store.insert_version("m3", "f" * 64, 1, manifest("m3"), "ana", [])
            raise Conflict("refused after writing")  # its version must not survive
        digest = hashlib.sha256(bytes([i])).hexdigest()
        return store.insert_version(f"m{i}", digest, 1, manifest(f"m{i}"), "ana", [])[1]

    async def go():
        first = asyncio.ensure_future(group.run(push, 0))
        await asyncio.sleep(0.1)
        rest = [asyncio.ensure_future(group.run(push, i)) for i in range(1, 6)]
        await asyncio.sleep(0.1)
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    try:
        out = run_alone(go)
    finally:
        pool.shutdown()
    assert out[:3] == [1, 1, 1] and out[4:] == [1, 1]
    assert isinstance(out[3], Conflict)
    assert (group.batches, group.calls) == (2, 6)  # the lone first, then five together
    fresh = MetadataStore.open(store.url_for_tests)  # another connection sees it all
    try:
        assert sorted(m["name"] for m in fresh.list_models()) == ["m0", "m1", "m2", "m4", "m5"]
        assert fresh.verify_audit() is None
        assert len(fresh.audit_rows(("version.create",))) == 5
    finally:
        fresh.close()


def test_a_failed_commit_fails_every_caller_in_it(store, monkeypatch):
    pool = ThreadPoolExecutor(1)
    group = GroupCommit(store, pool)
    real = store.transaction

    class Boom(Exception):
        pass

    import contextlib

    @contextlib.contextmanager
    def failing_commit():
        with real() as c:
            yield c
        raise Boom("the disk is full")

    monkeypatch.setattr(store, "transaction", failing_commit)

    def push(i):
        return store.insert_version(f"m{i}", "a" * 63 + str(i), 1, manifest("m"), "ana", [])[1]

    async def go():
        return await asyncio.gather(*(group.run(push, i) for i in range(3)), return_exceptions=True)

    try:
        out = run_alone(go)
    finally:
        pool.shutdown()
    assert all(isinstance(o, Boom) for o in out)
