"""Concurrent pushes to one name: numbers 1..N with no gaps, repeats or errors."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

from agent_support import NO_CHECKS
from s3_support import agent_blobs
from support import bundle_bytes


def push_all(agent, name: str, payloads: list[bytes]) -> list[tuple[int, dict]]:
    barrier = threading.Barrier(len(payloads))

    def one(data: bytes):
        barrier.wait(timeout=60)
        return agent.push_bytes(name, data)

    with ThreadPoolExecutor(len(payloads)) as pool:
        return list(pool.map(one, payloads))


def test_32_concurrent_pushes_make_versions_1_to_32(agent_factory):
    a = agent_factory(NO_CHECKS)
    payloads = [bundle_bytes("busy", model=f"model {i}".encode() * 500) for i in range(32)]
    results = push_all(a, "busy", payloads)

    assert [s for s, _ in results] == [201] * 32, results
    numbers = sorted(b["version"] for _, b in results)
    assert numbers == list(range(1, 33))
    # Each answer names the version holding exactly the bytes that were sent.
    for data, (_, body) in zip(payloads, results, strict=True):
        assert body["digest"] == hashlib.sha256(data).hexdigest()
        _, v = a.request("GET", f"/api/v1/models/busy/versions/{body['version']}")
        assert v["digest"] == body["digest"]

    _, listing = a.request("GET", "/api/v1/models/busy/versions")
    assert [v["number"] for v in listing["versions"]] == list(range(32, 0, -1))
    _, models = a.request("GET", "/api/v1/models")
    assert models["models"][0]["versions"] == 32
    assert a.healthy()
    assert "ERROR" not in a.read_log()


def test_16_concurrent_identical_pushes_make_one_version(agent_factory):
    a = agent_factory(NO_CHECKS)
    data = bundle_bytes("same", model=b"identical" * 1000)
    results = push_all(a, "same", [data] * 16)

    statuses = sorted(s for s, _ in results)
    assert statuses == [200] * 15 + [201], results
    assert {b["version"] for _, b in results} == {1}
    assert {b["digest"] for _, b in results} == {hashlib.sha256(data).hexdigest()}
    _, listing = a.request("GET", "/api/v1/models/same/versions")
    assert [v["number"] for v in listing["versions"]] == [1]
    blobs = set(agent_blobs(a).iter_digests())
    # the bundle, stored once, plus the one version's three reports (html, json, md)
    assert hashlib.sha256(data).hexdigest() in blobs and len(blobs) == 1 + 3
    assert a.healthy()


def test_concurrent_pushes_to_many_names_number_each_name_from_1(agent_factory):
    a = agent_factory(NO_CHECKS)
    names = [f"n{i % 4}" for i in range(24)]
    payloads = [bundle_bytes(n, model=f"{n} {i}".encode()) for i, n in enumerate(names)]
    barrier = threading.Barrier(len(payloads))

    def one(args):
        name, data = args
        barrier.wait(timeout=60)
        return name, a.push_bytes(name, data)

    with ThreadPoolExecutor(len(payloads)) as pool:
        results = list(pool.map(one, zip(names, payloads, strict=True)))
    assert all(s == 201 for _, (s, _) in results), results
    for n in set(names):
        got = sorted(b["version"] for name, (_, b) in results if name == n)
        assert got == list(range(1, 7)), (n, got)
