"""Clients that hold connections open cannot take the agent's file descriptors: the model
server keeps to its share, the API (the same process) still answers, and nothing floods
the log."""

from __future__ import annotations

import json
import socket
import urllib.request
from contextlib import ExitStack

from support import RunningAgent, until

FILES = 700  # the agent's open-file limit: each server may hold (700 - 512) // 2 = 94


def test_idle_connections_past_the_servers_share_are_closed_and_the_api_answers(tmp_path):
    central = RunningAgent(
        tmp_path / "home",
        tmp_path / "rt",
        ["--role", "central"],
        prefix=["prlimit", f"--nofile={FILES}:{FILES}"],
    )
    central.start()
    try:
        serving = json.loads(central.runtime_file.read_text())["serving_url"]
        host, port = serving.removeprefix("http://").rsplit(":", 1)
        with ExitStack() as held:
            # Given more idle connections to the model server than the agent has files
            idle = [
                held.enter_context(socket.create_connection((host, int(port)), timeout=30))
                for _ in range(FILES + 50)
            ]
            closed = []

            def refused() -> int:
                for s in idle:
                    if s not in closed:
                        s.setblocking(False)
                        try:
                            if s.recv(1) == b"":
                                closed.append(s)
                        except BlockingIOError:
                            pass
                return len(closed)

            # Then those past the server's share are closed at once ...
            until(lambda: refused() >= FILES + 50 - 94, what="the connections past the share")
            # ... the API, in the same process, still answers
            assert central.request("GET", "/api/v1/ready")[0] == 200
        # And once the clients let go, the model server answers again
        until(lambda: _ready(serving), what="the model server to answer")
        log = central.read_log()
        assert "Too many open files" not in log
        assert log.count("the most this server holds") == 1
    finally:
        central.stop()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/health/live", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False
