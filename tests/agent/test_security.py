"""Request rules: token, Host, Origin, content type. Every route is covered by enumeration."""

from __future__ import annotations

import itertools

import pytest
from agent_support import UPLOAD, assert_error, built_app, request_full
from support import bundle_bytes
from tornado import web

from handoff_agent.handlers.base import ANY_ROLE, BaseHandler

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Sample values tried for each path argument, in order, until the route's regex matches.
SAMPLES = ("m", "1", "model-1", "a" * 64, "x")


@pytest.fixture(autouse=True)
def _still_healthy(shared_agent):
    yield
    assert shared_agent.healthy(), shared_agent.read_log()


def test_health_needs_no_token(shared_agent):
    status, body = shared_agent.request("GET", "/api/v1/health", token=False)
    assert status == 200
    assert body["status"] == "ok"


def test_no_token_is_401(shared_agent):
    status, body = shared_agent.request("GET", "/api/v1/models", token=False)
    assert_error(status, body, 401, "unauthorized")
    assert "token" in body["error"]["hint"].lower()


@pytest.mark.parametrize(
    "auth",
    ["token wrong", "Bearer wrong", "token ", "token", "Basic dXNlcjpwYXNz", "wrong"],
)
def test_wrong_token_is_401(shared_agent, auth):
    status, body = shared_agent.request(
        "GET", "/api/v1/models", headers={"Authorization": auth}, token=False
    )
    assert_error(status, body, 401, "unauthorized")


def test_token_prefix_or_extension_is_401(shared_agent):
    t = shared_agent.token
    for given in (t[:-1], t + "x", t.upper() if t.upper() != t else t.lower() + "!"):
        status, body = shared_agent.request(
            "GET", "/api/v1/models", headers={"Authorization": f"token {given}"}, token=False
        )
        assert_error(status, body, 401, "unauthorized")


def test_right_token_both_schemes(shared_agent):
    for scheme in ("token", "Bearer", "bearer"):
        status, body = shared_agent.request(
            "GET",
            "/api/v1/models",
            headers={"Authorization": f"{scheme} {shared_agent.token}"},
            token=False,
        )
        assert status == 200, body


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost.evil"]
)
def test_foreign_host_is_403(shared_agent, host):
    # Even with the right token: a DNS-rebinding page would send the victim's browser here.
    status, body = shared_agent.request("GET", "/api/v1/models", headers={"Host": host})
    assert_error(status, body, 403, "bad_host")


def test_foreign_host_is_403_on_public_and_unknown_routes(shared_agent):
    for path in ("/api/v1/health", "/nowhere"):
        status, body = shared_agent.request(
            "GET", path, headers={"Host": "evil.example"}, token=False
        )
        assert_error(status, body, 403, "bad_host")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_loopback_hosts_are_allowed(shared_agent, host):
    status, body = shared_agent.request(
        "GET", "/api/v1/models", headers={"Host": f"{host}:{shared_agent.port}"}
    )
    assert status == 200, body


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "https://127.0.0.1.evil.example", "http://localhost"]
)
def test_foreign_origin_is_403(shared_agent, origin):
    status, body = shared_agent.request("GET", "/api/v1/models", headers={"Origin": origin})
    assert_error(status, body, 403, "bad_origin")


def test_foreign_origin_is_403_even_on_health(shared_agent):
    status, body = shared_agent.request(
        "GET", "/api/v1/health", headers={"Origin": "http://evil.example"}, token=False
    )
    assert_error(status, body, 403, "bad_origin")


def test_same_origin_is_allowed(shared_agent):
    origin = f"http://{shared_agent.host}:{shared_agent.port}"
    status, body = shared_agent.request("GET", "/api/v1/models", headers={"Origin": origin})
    assert status == 200, body


def test_allowed_origin_and_host_by_config(agent_factory):
    a = agent_factory(
        "--HandoffAgent.allowed_origins=['https://hub.example']",
        "--HandoffAgent.allowed_hosts=['agent.example']",
        "--HandoffAgent.checks=[]",
    )
    status, body = a.request("GET", "/api/v1/models", headers={"Origin": "https://hub.example"})
    assert status == 200, body
    status, body = a.request("GET", "/api/v1/models", headers={"Host": "agent.example"})
    assert status == 200, body
    status, body = a.request("GET", "/api/v1/models", headers={"Origin": "https://other.example"})
    assert_error(status, body, 403, "bad_origin")


@pytest.mark.parametrize(
    "ctype", ["application/json", "text/plain", "multipart/form-data; boundary=x", None]
)
def test_upload_with_wrong_content_type_is_415(shared_agent, ctype):
    data = bundle_bytes("ctype")
    headers = {} if ctype is None else {"Content-Type": ctype}
    status, body = shared_agent.request("POST", UPLOAD.format("ctype"), body=data, headers=headers)
    assert_error(status, body, 415, "unsupported_media_type")
    status, body = shared_agent.request("GET", "/api/v1/models")
    assert "ctype" not in [m["name"] for m in body["models"]]


def test_upload_without_token_is_401_before_content_type(shared_agent):
    status, body = shared_agent.request(
        "POST", UPLOAD.format("m"), body=b"x", headers={"Content-Type": "text/plain"}, token=False
    )
    assert_error(status, body, 401, "unauthorized")


def test_responses_carry_safety_headers(shared_agent):
    status, headers, _ = request_full(shared_agent, "GET", "/api/v1/models")
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"


# -- every route, enumerated ---------------------------------------------------------------


def _routes(tmp_path):
    app = built_app(tmp_path / "enum-home")
    out = []
    for rule in app.wildcard_router.rules:
        handler = rule.target
        assert isinstance(handler, type) and issubclass(handler, web.RequestHandler), (
            f"route {rule.matcher} is not a plain handler; teach this test about it"
        )
        regex = rule.matcher.regex
        path = None
        for args in itertools.product(SAMPLES, repeat=regex.groups):
            candidate = rule.matcher.reverse(*args)
            if candidate is not None and regex.fullmatch(candidate):
                path = candidate
                break
        assert path is not None, f"no sample path for {regex.pattern}; extend SAMPLES"
        out.append((path, handler))
    assert default_handler_is_public_404(app)
    return out


def default_handler_is_public_404(app) -> bool:
    return app.settings["default_handler_class"].public is True


def test_route_enumeration_finds_the_known_routes(tmp_path):
    paths = {p for p, _ in _routes(tmp_path)}
    assert {"/api/v1/health", "/api/v1/models", "/api/v1/models/m/versions"} <= paths
    assert "/api/v1/models/m/versions/1" in paths


def test_every_route_inherits_the_request_rules(tmp_path):
    for path, handler in _routes(tmp_path):
        assert issubclass(handler, BaseHandler), path
        # A handler may extend prepare(), but must still run the base rules (checked live below).


def test_every_non_public_route_and_method_needs_the_token(tmp_path, shared_agent):
    checked = 0
    for path, handler in _routes(tmp_path):
        for method in METHODS:
            body = b"" if method in ("POST", "PUT", "PATCH") else None
            for auth in (None, "token not-the-token"):
                headers = {"Content-Type": "application/json"}
                if auth:
                    headers["Authorization"] = auth
                status, resp = shared_agent.request(
                    method, path, body=body, headers=headers, token=False
                )
                if handler.public:
                    assert status != 401, (method, path, resp)
                    continue
                assert status == 401, (method, path, auth, resp)
                if method != "HEAD":
                    assert_error(status, resp, 401, "unauthorized")
                checked += 1
    assert checked >= 3 * len(METHODS) * 2


def test_reads_closed_to_some_roles_are_only_the_audit_log(tmp_path):
    # Reads are open to every role but a consumer; the audit log is every model's and every
    # user's history (token grants by name, trust changes, who signed what): reviewers and
    # admins only (tests/agent/test_audit_log.py refuses an analyst live).
    closed = {}
    for path, handler in _routes(tmp_path):
        if handler.public or handler.get is web.RequestHandler.get:
            continue
        # a per-agent table (the watches') is a property: its reads stay open, as declared
        roles = handler.roles if isinstance(handler.roles, dict) else BaseHandler.roles
        if set(roles.get("GET", ())) != set(ANY_ROLE):
            closed[path] = roles.get("GET", ())
    assert closed == {"/api/v1/audit": ("reviewer", "admin")}


def test_public_routes_are_only_health_readiness_api_schema_keys_and_signed_intake(tmp_path):
    # Intake takes no token: each delivery is authenticated by its HMAC signature instead
    # (tests/agent/test_pipeline_delivery.py proves unsigned and mis-signed ones are refused).
    # The OpenAPI document describes routes, never data; /keys is central's public key, which
    # anyone checking a dossier offline needs. /ready says only whether the stores answer,
    # for a load balancer's probe.
    public = sorted(p for p, h in _routes(tmp_path) if h.public)
    assert public == [
        "/api/v1/health",
        "/api/v1/intake",
        "/api/v1/keys",
        "/api/v1/openapi.json",
        "/api/v1/ready",
    ]
