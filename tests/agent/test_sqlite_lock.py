"""Two centrals on one SQLite file: a writer waits for the other's lock (busy_timeout), and
one that waits too long gets the JSON error shape with 503 and Retry-After, never a 500."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import RunningAgent


@contextlib.contextmanager
def write_lock(path):
    """Hold SQLite's write lock on ``path``, as another process in a long transaction does."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        with contextlib.suppress(sqlite3.ProgrammingError):
            conn.rollback()
        conn.close()


@pytest.fixture
def two_centrals(tmp_path, backend):
    if backend.name != "sqlite":
        pytest.skip("one SQLite file shared by two processes")
    db = tmp_path / "shared.db"
    started = []
    for name, wait in (("a", 0.5), ("b", 20)):
        agent = RunningAgent(
            tmp_path / name,
            tmp_path / f"rt-{name}",
            ["--role", "central", f"--HandoffAgent.database_busy_timeout={wait}"],
            database_url=f"sqlite:///{db}",
        )
        agent.start()
        started.append(agent)
    yield db, *started
    for agent in started:
        agent.stop()


def new_token(agent, user: str):
    body = {"user": user, "roles": ["reviewer"]}
    return agent.request_full("POST", "/api/v1/tokens", body=body)


def test_two_centrals_on_one_sqlite_file_wait_then_answer_503(two_centrals):
    db, a, b = two_centrals
    # Given two centrals writing to one file at once: every write lands, none is a 500
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: new_token((a, b)[i % 2], f"u{i}"), range(16)))
    assert [status for status, _, _ in answers] == [201] * 16

    # When another process holds the write lock briefly, the write waits for it
    with write_lock(db) as conn:
        threading.Timer(0.5, conn.rollback).start()
        status, _, body = new_token(b, "patient")
    assert status == 201, body

    # When it holds the lock past the busy timeout, the answer is 503 with Retry-After
    with write_lock(db):
        status, headers, body = new_token(a, "impatient")
        # and reads still answer (WAL: readers never wait for a writer)
        assert a.request("GET", "/api/v1/models")[0] == 200
    assert status == 503, body
    assert set(body) == {"error"} and body["error"]["code"] == "database_busy"
    assert body["error"]["message"] and body["error"]["hint"]
    assert headers.get("Content-Type", "").startswith("application/json")
    assert int(headers["Retry-After"]) >= 1
    assert "Uncaught exception" not in a.read_log()  # a 503 it meant, not a crash

    # Then, the lock gone, the same write succeeds
    assert new_token(a, "impatient")[0] == 201
