"""A write that PostgreSQL blocks on another session's lock (another replica's or a script's
long transaction) is answered 503 ``database_busy`` with Retry-After within
``c.HandoffAgent.database_busy_timeout`` (its lock_timeout), as on SQLite (test_sqlite_lock),
not left waiting without bound nor a 500; once the lock is gone the same write succeeds."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import RunningAgent

assert RunningAgent  # this module starts agents: conftest runs it on every backend
BUSY = 2  # c.HandoffAgent.database_busy_timeout of the agent below, in seconds
# Only against a hang: the lock is let go after ten timeouts, and a write that waited for
# it without bound is then answered 201, which the test refuses.
HANG = 10 * BUSY


def new_token(agent, user: str):
    body = {"user": user, "roles": ["reviewer"]}
    return agent.request_full("POST", "/api/v1/tokens", body, timeout=3 * HANG)


def test_a_write_blocked_by_another_sessions_lock_answers_503(agent_factory, backend):
    if backend.name == "sqlite":
        pytest.skip("PostgreSQL's row locks; SQLite's file lock: test_sqlite_lock")
    import psycopg

    agent = agent_factory(f"--HandoffAgent.database_busy_timeout={BUSY}")
    assert new_token(agent, "first")[0] == 201
    # Given another session holding the audit chain's head row, which every audited write
    # locks to append its entry
    other = psycopg.connect(agent.database_url)
    try:
        other.execute("SELECT id FROM audit_head WHERE id = 1 FOR UPDATE")
        release = threading.Timer(HANG, other.rollback)
        release.start()
        try:
            # When users write meanwhile (queued on the agent's writer behind each other)
            with ThreadPoolExecutor(4) as pool:
                writes = list(pool.map(lambda i: new_token(agent, f"u{i}"), range(4)))
            # and read
            read = agent.request("GET", "/api/v1/models", timeout=HANG)
            held = release.is_alive()  # the answers came while the lock was still held
        finally:
            release.cancel()
        # Then each write is answered 503 in the JSON shape, with Retry-After, not a 500
        assert held, "the writes waited for the lock to be let go"
        for status, headers, body in writes:
            assert status == 503, body
            assert set(body) == {"error"} and body["error"]["code"] == "database_busy", body
            assert body["error"]["message"] and body["error"]["hint"]
            assert headers.get("Content-Type", "").startswith("application/json")
            assert int(headers["Retry-After"]) >= 1
        assert read[0] == 200, read
        assert "Uncaught exception" not in agent.read_log()
    finally:
        other.rollback()
        other.close()

    # Then, the lock gone, the same write succeeds
    assert new_token(agent, "u0")[0] == 201
