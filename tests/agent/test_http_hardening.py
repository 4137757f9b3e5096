"""HTTP hardening: refused before the body, capped JSON, strict integers, no secret in logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from agent_support import (
    NO_CHECKS,
    UPLOAD,
    assert_error,
    raw_connect,
    read_response,
    wait_until,
)
from support import RunningAgent, bundle_bytes, send_until_answered

from handoff_agent import signing

BIG = 256 << 20  # the unauthenticated body the agent must not read
JSON_ROUTE = "/api/v1/models/m/versions/1/forward"
SECRET = "intake-secret-for-hardening-tests-0123456789"


@pytest.fixture(scope="module")
def central(tmp_path_factory, backend):
    root = tmp_path_factory.mktemp("hardening-central")
    policy = root / "policy.toml"
    policy.write_text(f'[intake]\nsecrets = ["{SECRET}"]\ntrusted_types = []\n')
    # --log-level as an operator quietens central: the test below reads its log
    args = ["--role", "central", "--policy", str(policy), "--log-level=WARN"]
    a = RunningAgent(root / "home", root / "rt", args)
    a.start()
    yield a
    a.stop()


def test_log_level_governs_the_agents_own_lines(central):
    """``serve --log-level=WARN`` quietened serve's lines, but the agent's own stayed at INFO
    ("[handoff INFO] Model server listening on …")."""
    # When a request is refused (logged as a warning)
    assert central.request("GET", "/api/v1/models", token="not-the-token")[0] == 401
    # Then the warning is in the log, and no line below it
    assert wait_until(lambda: "[handoff WARNING]" in central.read_log()), central.read_log()
    log = central.read_log()
    assert "[handoff INFO]" not in log and "Model server listening" not in log, log


def head(agent, method, path, headers: dict, length: int | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {agent.host}:{agent.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def peak_rss(agent) -> int:
    """The agent process's high-water mark of resident memory, in bytes."""
    for line in open(f"/proc/{agent.proc.pid}/status"):  # noqa: SIM115
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize(
    ("path", "ctype"),
    [(JSON_ROUTE, "application/json"), (UPLOAD.format("m"), "application/x-tar")],
    ids=["json-route", "push-route"],
)
def test_unauthenticated_256_mib_body_is_refused_before_it_is_read(shared_agent, path, ctype):
    # Given a client that sends no token but announces a 256 MiB body
    before = peak_rss(shared_agent)
    request_head = head(shared_agent, "POST", path, {"Content-Type": ctype}, BIG)
    # When it streams the body for as long as the agent has not answered
    status, body, sent = send_until_answered(shared_agent.address, request_head, BIG)
    # Then the 401 arrives long before the body could have been read, and memory did not grow
    assert_error(status, body, 401, "unauthorized")
    assert sent < BIG // 4, f"the agent read {sent} bytes before refusing"
    assert peak_rss(shared_agent) - before < 64 << 20
    assert shared_agent.healthy()


def test_intake_without_delivery_headers_is_refused_before_the_body(central):
    request_head = head(
        central, "POST", "/api/v1/intake", {"Content-Type": "application/x-tar"}, BIG
    )
    status, body, sent = send_until_answered(central.address, request_head, BIG)
    assert_error(status, body, 401)
    assert sent < BIG // 4
    assert central.healthy()


def test_intake_of_a_delivery_naming_no_key_is_refused_before_the_body(central):
    """Without X-Handoff-Key, the signature could only be checked after the body: an unsigned
    sender could make central read (and spool) one. It is refused on its headers instead."""
    delivery, stamp = "cd" * 16, str(int(time.time()))
    headers = {
        "Content-Type": "application/x-tar",
        "X-Handoff-Delivery": delivery,
        "X-Handoff-Timestamp": stamp,
        "X-Handoff-Signature": signing.sign(SECRET, delivery, stamp, [b""]),
    }
    status, body, sent = send_until_answered(
        central.address, head(central, "POST", "/api/v1/intake", headers, BIG), BIG
    )
    assert_error(status, body, 401, "bad_signature")
    # an older sender, which names no key, drops hints: the way out is in the message
    assert body["error"]["message"] == (
        "The delivery names no key (X-Handoff-Key): the sending agent runs an older Handoff "
        "than central; upgrade it (pip install -U jupyter-handoff)."
    )
    assert sent < BIG // 4
    assert central.healthy()


def test_intake_refuses_a_declared_size_over_its_limit_before_the_body(central):
    # Given well-formed delivery headers (the signature can only be checked after the body)
    delivery, stamp = "ab" * 16, str(int(time.time()))
    headers = {
        "Content-Type": "application/x-tar",
        "X-Handoff-Delivery": delivery,
        "X-Handoff-Timestamp": stamp,
        "X-Handoff-Signature": signing.sign(SECRET, delivery, stamp, [b""]),
        signing.KEY_HEADER: signing.key_id(SECRET),
    }
    request_head = head(central, "POST", "/api/v1/intake", headers, 1 << 40)
    # When the declared size is over the limit, the answer is a JSON 413 before any body byte
    status, body, sent = send_until_answered(central.address, request_head, 1 << 30)
    assert_error(status, body, 413, "too_large")
    assert sent < 1 << 28
    assert central.healthy()


def test_json_body_over_one_mib_is_413_declared_or_chunked(shared_agent):
    auth = {"Authorization": f"token {shared_agent.token}", "Content-Type": "application/json"}
    status, body, sent = send_until_answered(
        shared_agent.address, head(shared_agent, "POST", JSON_ROUTE, auth, 2 << 20), 2 << 20
    )
    assert_error(status, body, 413, "too_large")
    status, body, sent = send_until_answered(
        shared_agent.address,
        head(shared_agent, "POST", JSON_ROUTE, auth, None),
        64 << 20,
        chunked=True,
    )
    assert_error(status, body, 413, "too_large")
    assert sent < 32 << 20
    assert shared_agent.healthy()


def test_json_body_just_under_the_cap_is_read(shared_agent):
    # padded with JSON's own whitespace: another key would be 400 unknown_field
    body = b'{"to": "nowhere"' + b" " * ((1 << 20) - 100) + b"}"
    assert len(body) <= 1 << 20
    status, resp = shared_agent.request(
        "POST", JSON_ROUTE, body=body, headers={"Content-Type": "application/json"}
    )
    assert_error(status, resp, 400, "unknown_destination")


@pytest.mark.parametrize("depth", [33, 100_000])
def test_deeply_nested_json_is_400(shared_agent, depth):
    body = ("[" * depth + "]" * depth).encode()
    status, resp = shared_agent.request(
        "POST", JSON_ROUTE, body=body, headers={"Content-Type": "application/json"}
    )
    assert_error(status, resp, 400, "too_deep")
    assert shared_agent.healthy()


def test_nesting_inside_strings_does_not_count(shared_agent):
    body = json.dumps({"to": "[{" * 45}).encode()  # 90 deep if strings counted; the cap 32
    status, resp = shared_agent.request(
        "POST", JSON_ROUTE, body=body, headers={"Content-Type": "application/json"}
    )
    assert_error(status, resp, 400, "unknown_destination")


def test_json_depth_counts_as_a_tokenizer_does():
    """Strings skipped (escaped quotes inside them too), an unpaired quote starts none."""
    import random
    import re

    from handoff_agent.handlers.base import json_depth

    tokens = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')

    def reference(data: bytes) -> int:
        depth = deepest = 0
        for m in tokens.finditer(data):
            depth += 1 if m.group() in (b"[", b"{") else -1 if m.group() in (b"]", b"}") else 0
            deepest = max(deepest, depth)
        return deepest

    rng = random.Random(0)
    for alphabet in (b'[]{}"\\a,:1', b'[]{}"a,', b'[{"'):
        for _ in range(20_000):
            data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
            assert json_depth(data) == reference(data), data
    assert json_depth(json.dumps({"a": ["[{", {"b": '\\"]'}]}).encode()) == 3


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/models/m/versions?limit=%D9%A1%D9%A2",  # Arabic-Indic 12
        "/api/v1/models/m/versions?limit=%EF%BC%95",  # fullwidth 5
        "/api/v1/models/m/versions?limit=1_0",
        "/api/v1/models/m/versions?limit=%2B5",
        "/api/v1/models/m/champion?before=%E0%A5%A9",  # Devanagari 3
        "/api/v1/events?version=%D9%A1",
        "/api/v1/lineage?model=m&version=%D9%A1",
    ],
)
def test_only_ascii_digits_are_integers(shared_agent, path):
    status, body = shared_agent.request("GET", path)
    assert_error(status, body, 400)


def test_non_ascii_content_length_is_refused(shared_agent):
    with raw_connect(shared_agent) as sock:
        sock.sendall(
            head(
                shared_agent,
                "POST",
                JSON_ROUTE,
                {
                    "Authorization": f"token {shared_agent.token}",
                    "Content-Type": "application/json",
                },
                None,
            ).replace(b"Transfer-Encoding: chunked", "Content-Length: ١٢".encode())
        )
        status, _ = read_response(sock)
    assert 400 <= status < 500
    assert shared_agent.healthy()


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS"])
def test_a_body_on_a_method_that_takes_none_is_4xx(shared_agent, method):
    status, headers, body = shared_agent.request_full(
        method, "/api/v1/models", body=b'{"a": 1}', headers={"Content-Type": "application/json"}
    )
    assert 400 <= status < 500, (status, body)
    if method != "HEAD":
        assert_error(status, body, status)
    assert headers["Content-Type"].startswith("application/json")
    assert shared_agent.healthy()


def test_tokens_never_reach_the_log(agent):
    # Given requests carrying the token in the header and secrets in query strings
    leak = "sekrit-value-that-must-not-be-logged"
    for path in (
        f"/api/v1/models?token={leak}",
        f"/api/v1/nowhere?x=1&token={leak}",
        f"/api/v1/models/m/versions?limit=bad&api_key={leak}",
    ):
        agent.request("GET", path)
        agent.request("GET", path, token=False)
    assert agent.request("GET", "/api/v1/models?limit=5")[0] == 200
    # When the agent has written its access log
    agent.stop()
    log = agent.read_log()
    # Then neither the token nor the query secret is in it, and the requests are
    assert "/api/v1/nowhere?x=1&token=REDACTED" in log
    assert leak not in log
    # (a route takes no such parameter: refused, and logged redacted)
    assert "400 GET /api/v1/models?token=REDACTED" in log
    # a read that succeeded is not logged at INFO (agents and panels poll)
    assert "200 GET /api/v1/models?limit=5" not in log
    assert agent.token not in log


def serve(tmp_path, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "handoff_agent", "serve", "--home", str(tmp_path / "h"), *args],
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--HandoffAgent.token=short-token"], None),
        ([], {"HANDOFF_TOKEN": "a" * 21}),
    ],
    ids=["config", "environment"],
)
def test_a_short_api_token_is_refused_at_start(tmp_path, args, env):
    p = serve(tmp_path, *args, env=env)
    assert p.returncode != 0
    err = p.stderr + p.stdout
    assert "128 bits" in err and "secrets.token_urlsafe" in err, err
    assert "Traceback" not in err, err
    assert not (tmp_path / "rt" / "handoff-local.json").exists()


def test_report_may_be_framed_only_by_its_own_origin(agent_factory):
    a = agent_factory(NO_CHECKS)
    status, _ = a.push_bytes("framed", bundle_bytes("framed"))
    assert status == 201
    status, headers, _ = a.request_full("GET", "/api/v1/models/framed/versions/1/report")
    assert status == 200
    csp = [d.strip() for d in headers["Content-Security-Policy"].split(";")]
    assert "frame-ancestors 'self'" in csp
    assert "sandbox" in csp


def test_socket_helper_really_streams(shared_agent):
    """The helper used above does send a body when the agent reads it (no false pass)."""
    auth = {"Authorization": f"token {shared_agent.token}", "Content-Type": "application/json"}
    body = b'{"to": "nowhere"}'
    with raw_connect(shared_agent) as sock:
        sock.sendall(head(shared_agent, "POST", JSON_ROUTE, auth, len(body)) + body)
        status, resp = read_response(sock)
    assert_error(status, resp, 400, "unknown_destination")


def test_a_delete_needs_no_content_type(shared_agent):
    """A DELETE carries no body, so no type for it: the route answers (404 here), not 415."""
    status, _, body = shared_agent.request_full("DELETE", "/api/v1/watches/999999")
    assert_error(status, body, 404, "no_source")


def test_a_post_with_no_body_to_a_json_route_is_an_empty_object(shared_agent):
    """`curl -X POST .../watches/ID/check` sends no body and no type: the route answers (a
    404 for a watch that is not there), not 415; an upload still needs its type."""
    status, _, body = shared_agent.request_full("POST", "/api/v1/watches/999999/check")
    assert_error(status, body, 404, "no_source")
    status, _, body = shared_agent.request_full("POST", "/api/v1/models/m/versions")
    assert_error(status, body, 415, "unsupported_media_type")


def test_a_method_a_route_lacks_is_405_whatever_its_content_type(shared_agent):
    status, _, body = shared_agent.request_full("PATCH", "/api/v1/models", body=b"{}")
    assert_error(status, body, 405)
