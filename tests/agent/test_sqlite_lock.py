"""Two centrals on one SQLite file: a writer waits for the other's lock (busy_timeout), and
one that waits too long gets the JSON error shape with 503 and Retry-After, never a 500.
Another process holding the lock while many writes queue on the agent's one writer thread:
each is answered within the timeout (not after the timeouts of those before it), and the
background work that met the lock is done once it is gone."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from agent_support import NO_CHECKS
from support import RunningAgent, bundle_bytes, until

BUSY = 2  # c.HandoffAgent.database_busy_timeout of the agent below, in seconds
# Only against a hang: ten timeouts. Before each write waited out one after another's, the
# writes below were answered after about 20 timeouts.
HANG = 10 * BUSY
UNRECORDED = "the delivery of a:1 to webhook could not be recorded ((sqlite3.Operational"


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


class HeldReceiver(BaseHTTPRequestHandler):
    """A webhook that takes each delivery, then answers only once ``server.answer`` is set:
    the agent's writes of those outcomes come while the test holds the lock."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.got.append(body["name"])
        self.server.answer.wait(120)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def forwarding_agent(tmp_path, backend):
    if backend.name != "sqlite":
        pytest.skip("another process holding the agent's SQLite file")
    server = ThreadingHTTPServer(("127.0.0.1", 0), HeldReceiver)
    server.got, server.answer = [], threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_port}/hook"
    agent = RunningAgent(
        tmp_path / "home",
        tmp_path / "rt",
        [
            NO_CHECKS,
            *("--forward-to", "webhook"),
            f"--WebhookDestination.url={hook}",
            f"--WebhookDestination.allowed_urls=['{hook}']",
            "--WebhookDestination.secret=" + "s" * 32,
            f"--HandoffAgent.database_busy_timeout={BUSY}",
        ],
        database_url=None,  # the SQLite file in its home
    )
    agent.start()
    yield agent, server
    server.answer.set()
    agent.stop()
    server.shutdown()


def delivered(agent) -> dict[str, str]:
    status, body = agent.request("GET", "/api/v1/outbox/deliveries")
    assert status == 200, body
    return {d["model"]: d["state"] for d in body["deliveries"]}


def last_used(agent, user: str) -> str | None:
    out = agent.cli("token", "list", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return next(t["last_used"] for t in rows if t["user"] == user)  # --json: one a line


def test_a_lock_held_elsewhere_answers_every_write_503_and_loses_nothing(forwarding_agent):
    agent, receiver = forwarding_agent
    reader = agent.make_token("reader", "analyst")  # a stored token: its use is written
    # Given three acknowledged pushes, the first one's delivery held by the receiver (the
    # forwarder sends one at a time: the others wait their turn)
    for name in ("a", "b", "c"):
        assert agent.push_bytes(name, bundle_bytes(name))[0] == 201
    until(lambda: receiver.got, timeout=60, what="a delivery")

    # When another process holds the write lock, the receiver answers (the agent's record
    # of that delivery now waits for the lock), and users write meanwhile
    def ask(i: int):
        if i % 4 == 0:  # a push: refused whole, sent again below
            return agent.request_full(
                "POST",
                f"/api/v1/models/late{i}/versions",
                bundle_bytes(f"late{i}"),
                {"Content-Type": "application/x-tar"},
                timeout=HANG,
            )
        if i % 4 == 1:  # a forward asked again
            path = "/api/v1/models/a/versions/1/forward"
            return agent.request_full("POST", path, {"to": "webhook"}, timeout=HANG)
        body = {"user": f"u{i}", "roles": ["reviewer"]}
        return agent.request_full("POST", "/api/v1/tokens", body, timeout=HANG)

    with write_lock(agent.home / "registry.db"), ThreadPoolExecutor(16) as pool:
        receiver.answer.set()
        writes = list(pool.map(ask, range(16)))
        # and reads answer at once, a stored token's too (its last use is written later)
        listed = agent.request("GET", "/api/v1/models", token=reader, timeout=HANG)
        # Then each write was answered while the lock was still held: 503, the JSON shape
        for status, headers, body in writes:
            assert status == 503, body
            assert set(body) == {"error"} and body["error"]["code"] == "database_busy"
            assert body["error"]["message"].startswith("The database is locked by another")
            assert body["error"]["hint"] and int(headers["Retry-After"]) >= 1
        # and the delivery made meanwhile met the lock too: its record waits to be written
        until(lambda: UNRECORDED in agent.read_log(), timeout=HANG, what="the record to wait")
    assert listed[0] == 200 and {m["name"] for m in listed[1]["models"]} == {"a", "b", "c"}

    # Then, the lock gone, the deliveries made meanwhile are recorded, nothing lost
    expected = {"a": "delivered", "b": "delivered", "c": "delivered"}
    until(lambda: delivered(agent) == expected, timeout=60, what="the deliveries recorded")
    # and the refused writes go in when sent again
    assert agent.push_bytes("late0", bundle_bytes("late0"))[0] == 201
    body = {"user": "u2", "roles": ["reviewer"]}
    assert agent.request("POST", "/api/v1/tokens", body=body)[0] == 201
    # a token whose last use could not be written then has it written on its next use
    assert agent.request("GET", "/api/v1/models", token=reader)[0] == 200
    until(lambda: last_used(agent, "reader"), timeout=60, what="the token's last use")
    assert "Uncaught exception" not in agent.read_log()
