"""Every failure is {"error": {"code", "message", "hint"}} with a 4xx and a JSON content type."""

from __future__ import annotations

import tarfile

import pytest
from agent_support import (
    NO_CHECKS,
    UPLOAD,
    assert_error,
    raw_connect,
    read_response,
    request_full,
    upload_head,
)
from support import RunningAgent, bundle_bytes, make_tar

LIMIT = 100_000


@pytest.fixture(scope="module")
def small_agent(tmp_path_factory, backend):
    root = tmp_path_factory.mktemp("errshape")
    a = RunningAgent(
        root / "home", root / "rt", [NO_CHECKS, f"--HandoffAgent.max_bundle_size={LIMIT}"]
    )
    a.start()
    yield a
    a.stop()


TAR = {"Content-Type": "application/x-tar"}
CASES = [
    # (id, method, path, headers, body, token, status, code)
    ("404-route", "GET", "/api/v1/nowhere", {}, None, True, 404, "not_found"),
    ("404-root", "GET", "/", {}, None, False, 404, "not_found"),
    ("404-model", "GET", "/api/v1/models/absent/versions", {}, None, True, 404, "not_found"),
    ("404-version", "GET", "/api/v1/models/absent/versions/7", {}, None, True, 404, "not_found"),
    ("401-missing", "GET", "/api/v1/models", {}, None, False, 401, "unauthorized"),
    (
        "401-wrong",
        "GET",
        "/api/v1/models",
        {"Authorization": "token nope"},
        None,
        False,
        401,
        "unauthorized",
    ),
    ("403-host", "GET", "/api/v1/models", {"Host": "evil.example"}, None, True, 403, "bad_host"),
    (
        "403-origin",
        "GET",
        "/api/v1/models",
        {"Origin": "http://evil.example"},
        None,
        True,
        403,
        "bad_origin",
    ),
    (
        "415",
        "POST",
        UPLOAD.format("m"),
        {"Content-Type": "application/json"},
        b"{}",
        True,
        415,
        "unsupported_media_type",
    ),
    ("400-name", "GET", "/api/v1/models/bad%20name/versions", {}, None, True, 400, "invalid_name"),
    ("400-name-post", "POST", UPLOAD.format("-bad"), TAR, b"x", True, 400, "invalid_name"),
    (
        "400-limit",
        "GET",
        "/api/v1/models/m/versions?limit=zero",
        {},
        None,
        True,
        400,
        "bad_request",
    ),
    ("400-empty", "POST", UPLOAD.format("m"), TAR, b"", True, 400, "bad_request"),
    (  # no text column takes NUL; PostgreSQL refuses it outright
        "400-nul-in-json",
        "POST",
        "/api/v1/tokens",
        {"Content-Type": "application/json"},
        b'{"user": "a\\u0000b", "roles": ["analyst"]}',
        True,
        400,
        "bad_request",
    ),
    (
        "400-digest-header",
        "POST",
        UPLOAD.format("m"),
        {**TAR, "X-Handoff-Digest": "md5:abc"},
        b"x",
        True,
        400,
        "bad_digest_header",
    ),
    ("400-bad-utf8", "GET", "/api/v1/models/%FF/versions", {}, None, True, 400, None),
    # deployments live at central: a local agent with none says so (never a 500)
    (
        "404-traffic-local",
        "POST",
        "/api/v1/models/m/deployment/traffic",
        {"Content-Type": "application/json"},
        b'{"percent": 5}',
        True,
        404,
        "not_central",
    ),
    (
        "409-deployment-no-central",
        "GET",
        "/api/v1/models/m/deployment",
        {},
        None,
        True,
        409,
        "central_down",
    ),
    (
        "409-predict-no-central",
        "POST",
        "/api/v1/models/m/predict",
        {"Content-Type": "application/json"},
        b'{"instances": [[1, 2]]}',
        True,
        409,
        "central_down",
    ),
    ("405", "PUT", "/api/v1/models", {"Content-Type": "application/json"}, b"{}", True, 405, None),
    ("405-unknown-method", "BREW", "/api/v1/models", {}, None, True, 405, None),
    (
        "422-garbage",
        "POST",
        UPLOAD.format("m"),
        TAR,
        b"\x00garbage" * 100,
        True,
        422,
        "invalid_bundle",
    ),
    (
        "422-symlink",
        "POST",
        UPLOAD.format("m"),
        TAR,
        make_tar([("model.pkl", None, tarfile.SYMTYPE)]),
        True,
        422,
        "invalid_bundle",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "token", "status", "code"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_error_shape(small_agent, method, path, headers, body, token, status, code):
    got, resp_headers, resp = request_full(
        small_agent, method, path, body=body, headers=headers, token=token
    )
    assert got != 500
    assert_error(got, resp, status, code)
    assert resp_headers["Content-Type"].startswith("application/json")
    assert small_agent.healthy()


def test_too_large_is_413_with_the_error_shape(small_agent):
    # Declared too large: the agent answers from the headers, before any body byte is read.
    # (Sending the whole body too may race with the agent closing the connection, which
    # test_ingest_errors covers.)
    with raw_connect(small_agent) as sock:
        sock.sendall(upload_head(small_agent, "m", LIMIT + 1))
        status, body = read_response(sock)
    assert_error(status, body, 413, "too_large")
    assert small_agent.healthy()


def test_valid_push_still_works_after_the_errors(small_agent):
    status, body = small_agent.push_bytes("after-errors", bundle_bytes("after-errors"))
    assert status == 201, body
    assert "500 " not in small_agent.read_log()
