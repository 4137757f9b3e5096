"""Helpers shared by the agent tests: the error contract, raw sockets, polling (the webhook
receiver is in tests/support.py, which modules under tests/agent/serving/ import too)."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import time
from pathlib import Path

UPLOAD = "/api/v1/models/{}/versions"
NO_CHECKS = "--HandoffAgent.checks=[]"


def assert_error(status, body, expected_status: int, code: str | None = None) -> dict:
    """The one error contract: a 4xx status and exactly {"error": {code, message, hint}}."""
    assert status == expected_status, (status, body)
    assert 400 <= status < 500, (status, body)
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message", "hint"}, body
    assert all(isinstance(err[k], str) for k in err), body
    assert err["code"] and err["message"], body
    if code is not None:
        assert err["code"] == code, body
    return err


def request_full(agent, method, path, body=None, headers=None, token=True):
    """Like RunningAgent.request, but also returns the response headers."""
    return agent.request_full(method, path, body, headers, token)


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.02) -> bool:
    """Poll until ``predicate()`` is true. A generous bound, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def part_files(home: Path) -> list[Path]:
    tmp = Path(home) / "tmp"
    return sorted(tmp.glob("upload-*.part")) if tmp.is_dir() else []


def models(agent) -> list:
    status, body = agent.request("GET", "/api/v1/models")
    assert status == 200, body
    return body["models"]


def assert_nothing_stored(agent) -> None:
    """No version was created, the agent still answers, and no upload is left half-written."""
    assert agent.healthy(), agent.read_log()
    assert models(agent) == []
    assert wait_until(lambda: not part_files(agent.home)), part_files(agent.home)


def raw_connect(agent) -> socket.socket:
    return socket.create_connection((agent.host, agent.port), timeout=30)


def upload_head(agent, name: str, length: int | None, ctype="application/x-tar", extra=()) -> bytes:
    lines = [
        f"POST {UPLOAD.format(name)} HTTP/1.1",
        f"Host: {agent.host}:{agent.port}",
        f"Authorization: token {agent.token}",
        f"Content-Type: {ctype}",
    ]
    if length is None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict | str]:
    """Read one HTTP response (the agent sends Content-Length) from a raw socket."""
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    raw = resp.read()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw.decode(errors="replace")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def built_app(home: Path):
    """The agent's tornado app as make_app builds it, without serving: for route tables."""
    from handoff_agent.agent import HandoffAgent

    agent = HandoffAgent(home=str(home), entry_point_plugins=False)
    try:
        return agent.make_app()
    finally:
        agent._io.shutdown()
        agent._db.submit(agent.registry.close).result()
        agent._db.shutdown()


# The route tests' stand-ins for a route template's variables (test_query_parameters,
# test_body_fields): the requests are refused before a handler reads them.
SAMPLE = {"name": "churn", "number": "1", "source_id": "1"}


def implements(handler, method: str) -> bool:
    """Whether a route's handler answers ``method`` itself (not tornado's 405)."""
    from tornado import web

    return getattr(handler, method) is not getattr(web.RequestHandler, method)


def concrete(path: str) -> str:
    """A route template with ``SAMPLE``'s values: ``/api/v1/models/churn/versions/1``."""
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m.group(1)], path)


def local_and_central(root: Path, backend):
    """A running local agent and central on the backend's database, for a module's fixture
    (``yield from``); stopped after."""
    from support import RunningAgent

    url = backend.database_url()
    local = RunningAgent(root / "local", root / "rt-l", [], database_url=url)
    central = RunningAgent(root / "central", root / "rt-c", ["--role", "central"], database_url=url)
    local.start()
    central.start()
    yield {"local": local, "central": central}
    local.stop()
    central.stop()
