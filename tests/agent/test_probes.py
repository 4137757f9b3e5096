"""Central's warm trust-probe workers: one sandboxed worker serves many deliveries, and a
worker that hangs, dies or is killed mid-job is stopped and replaced; the next probe works."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import tarfile
import zipfile

import pytest

from handoff_agent.probes import ProbePool
from handoff_agent.sandbox import Limits, Sandbox


def bundle(path, types=("sklearn.linear_model._logistic.LogisticRegression",)) -> str:
    """A bundle whose skops file's schema names ``types`` (the probe reads only that)."""
    schema = {
        "__class__": types[0].rpartition(".")[2],
        "__module__": types[0].rpartition(".")[0],
        "__loader__": "ObjectNode",
        "content": {
            f"k{i}": {"__class__": t.rpartition(".")[2], "__module__": t.rpartition(".")[0]}
            for i, t in enumerate(types[1:])
        },
        "protocol": 1,
    }
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("schema.json", json.dumps(schema))
    with tarfile.open(path, "w") as tar:
        for name, data in (("manifest.json", b"{}"), ("model.skops", zbuf.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def slow_bundle(path) -> str:
    """A bundle whose schema takes the worker a second or more to read: 60 MB of JSON (a few
    hundred KB compressed), under the probe's 64 MB bound."""
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("schema.json", "[" + "0," * (30 << 20) + "0]")
    with tarfile.open(path, "w") as tar:
        for name, data in (("manifest.json", b"{}"), ("model.skops", zbuf.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def pool(**kw) -> ProbePool:
    kw.setdefault("size", 1)
    kw.setdefault("timeout", 30)
    return ProbePool(Sandbox("auto", hidden=[]), Limits(memory=2 << 30, processes=64), **kw)


def run(p: ProbePool, coro):
    """Run the test's coroutine, then stop the pool's workers in the same loop."""

    async def go():
        try:
            return await coro
        finally:
            await p.close()

    return asyncio.run(go())


async def probe(pool: ProbePool, path: str):
    with open(path, "rb") as f:
        return await pool.run({"bundle": ""}, {"bundle": f})


def pids(pool: ProbePool) -> list[int]:
    return [w.proc.pid for w in pool._idle]


def test_one_warm_worker_serves_many_probes(tmp_path):
    p = pool(size=1)
    one = bundle(tmp_path / "a.tar")
    two = bundle(tmp_path / "b.tar", ("xgboost.sklearn.XGBClassifier", "numpy.ndarray"))

    async def go():
        first = await probe(p, one)
        pid = pids(p)
        second = await probe(p, two)
        assert pids(p) == pid  # the same worker, not a new process per delivery
        return first, second

    first, second = run(p, go())
    assert first.result == {
        "ok": True,
        "types": ["sklearn.linear_model._logistic.LogisticRegression"],
    }
    assert second.result["types"] == ["numpy.ndarray", "xgboost.sklearn.XGBClassifier"]
    assert p.replaced == 0


def test_unreadable_bundle_is_a_verdict_and_the_worker_stays(tmp_path):
    p = pool()
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)

    async def go():
        bad = await probe(p, str(junk))
        good = await probe(p, bundle(tmp_path / "a.tar"))
        return bad, good

    bad, good = run(p, go())
    assert bad.result["ok"] is False and bad.error is None
    assert good.result["ok"] is True
    assert p.replaced == 0


def test_overrunning_probe_is_stopped_and_replaced(tmp_path):
    """A job past the timeout (as a hanging one would be) is abandoned: its worker is killed
    and the next probe gets a fresh one."""
    p = pool()
    slow = slow_bundle(tmp_path / "slow.tar")

    async def go():
        await probe(p, bundle(tmp_path / "warm.tar"))
        hung_pid = pids(p)[0]
        p.timeout = 0.05
        hung = await probe(p, slow)
        p.timeout = 30
        after = await probe(p, bundle(tmp_path / "a.tar"))
        return hung_pid, hung, after

    hung_pid, hung, after = run(p, go())
    assert isinstance(hung.error, TimeoutError) and hung.result is None
    assert after.result["ok"] is True
    assert hung_pid not in pids(p)
    assert p.replaced == 1
    with pytest.raises(ProcessLookupError):
        os.kill(hung_pid, 0)


def test_worker_killed_between_or_during_jobs_is_replaced(tmp_path):
    p = pool()
    path = bundle(tmp_path / "a.tar")
    slow = slow_bundle(tmp_path / "slow.tar")

    async def go():
        await probe(p, path)
        os.kill(pids(p)[0], signal.SIGKILL)  # dies while idle
        await asyncio.sleep(0.2)
        again = await probe(p, path)
        victim = pids(p)[0]  # dies mid-job, while it reads a large schema
        asyncio.get_running_loop().call_later(0.05, os.kill, victim, signal.SIGKILL)
        mid = await probe(p, slow)
        last = await probe(p, path)
        return again, mid, last

    again, mid, last = run(p, go())
    assert again.result["ok"] is True
    assert mid.result is None  # no answer from a dead worker, and no hang either
    assert last.result["ok"] is True
    assert p.replaced == 2


def test_workers_are_recycled_after_max_jobs(tmp_path):
    p = pool(max_jobs=2)
    path = bundle(tmp_path / "a.tar")

    async def go():
        seen = []
        for _ in range(4):
            assert (await probe(p, path)).result["ok"]
            seen.append(tuple(pids(p)))
        return seen

    seen = run(p, go())
    assert seen[0] and seen[1] == () and seen[2] and seen[3] == ()
    assert seen[2] != seen[0]  # a fresh worker after the first served its two


def test_concurrent_probes_use_at_most_size_workers(tmp_path):
    p = pool(size=2)
    paths = [bundle(tmp_path / f"{i}.tar") for i in range(6)]

    async def go():
        return await asyncio.gather(*(probe(p, x) for x in paths))

    out = run(p, go())
    assert all(o.result["ok"] for o in out)
    assert len(p._idle) <= 2 and p.replaced == 0
