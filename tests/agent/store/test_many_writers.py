"""Many writers, each its own process, on one database (SQLite file or PostgreSQL): version
numbers, the audit chain, outbox and check claims, delivery ids and stage moves hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from handoff_agent.store.engine import sqlite_url
from handoff_agent.store.metadata import MetadataStore
from handoff_agent.versions import VersionService

WRITERS = Path(__file__).with_name("writers.py")
N = 4  # processes


@pytest.fixture
def url(tmp_path, backend) -> str:
    url = backend.database_url() or sqlite_url(tmp_path / "registry.db")
    MetadataStore.open(url).close()  # migrated before the writers race
    return url


def race(tmp_path, url: str, op: str, args: list[str]) -> list[dict]:
    """Start one writer per arg, let them go at once, return what each printed."""
    go = tmp_path / f"go-{op}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITERS), url, str(go), op, a],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in args
    ]
    go.touch()
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=240)
        assert p.returncode == 0, stderr
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outs


def test_version_numbers_are_unique_and_gap_free_and_the_audit_chain_holds(tmp_path, url):
    per = 5
    outs = race(tmp_path, url, "push", [str(per)] * N)
    store = MetadataStore.open(url)
    try:
        numbers = [v["number"] for v in store.list_versions("m", 1000)]
        assert sorted(numbers) == list(range(1, N * per + 2))  # + the shared bytes, once
        got = [v for o in outs for v in o["versions"]]
        shared = {number for digest, number, _ in got if digest == "shared-bytes"}
        assert len(shared) == 1  # the same bytes from every writer: one version
        assert sum(created for digest, _, created in got if digest == "shared-bytes") == 1
        assert store.audit_first_bad() is None
        seqs = [r["seq"] for r in store.audit_rows()]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) == N * per + 1  # one version.create each
    finally:
        store.close()


def test_each_outbox_row_is_claimed_and_delivered_once(tmp_path, url):
    store = MetadataStore.open(url)
    service = VersionService(store)
    rows = 24
    for i in range(rows):
        version, _ = service.create_version("m", f"d{i}", 1, {"name": "m"}, "ana", [])
        vid = store.version_id("m", version["number"])
        assert store.outbox_enqueue(vid, "webhook")
    outs = race(tmp_path, url, "claim_outbox", ["-"] * N)
    claimed = [r for o in outs for r in o["rows"]]
    assert len(claimed) == len(set(claimed)) == rows
    assert store.outbox_summary() == [
        {"destination": "webhook", "state": "delivered", "n": rows, "last_error": None}
    ]
    delivered = store.audit_rows(("forward.delivered",))
    assert len(delivered) == rows
    assert store.audit_first_bad() is None
    store.close()


def test_each_queued_check_is_claimed_by_one_process(tmp_path, url):
    store = MetadataStore.open(url)
    service = VersionService(store)
    for i in range(6):
        service.create_version("m", f"d{i}", 1, {"name": "m"}, "ana", ["loads", "smoke"])
    queued = {r["id"] for r in store.queued_checks()}
    outs = race(tmp_path, url, "claim_checks", ["-"] * N)
    claimed = [r for o in outs for r in o["runs"]]
    assert len(claimed) == len(set(claimed))
    assert set(claimed) == queued
    store.close()


def test_a_delivery_id_is_claimed_once(tmp_path, url):
    outs = race(tmp_path, url, "delivery", ["d" * 32] * N)
    assert sorted(o["claimed"] for o in outs) == [False] * (N - 1) + [True]


def test_a_stage_move_happens_once(tmp_path, url):
    store = MetadataStore.open(url)
    service = VersionService(store)
    service.create_version("m", "d", 1, {"name": "m"}, "ana", [])
    vid = store.version_id("m", 1)
    store.stage_set(vid, "received", "central", "", "m:1")
    outs = race(tmp_path, url, "stage", [str(vid)] * N)
    assert sorted(o["moved"] for o in outs) == [False] * (N - 1) + [True]
    assert [s["stage"] for s in store.stage_history(vid)] == ["received", "validated"]
    assert store.audit_first_bad() is None
    store.close()
