"""The OpenAPI document describes every route of the app, and only those (no drift)."""

from __future__ import annotations

import schemathesis
from agent_support import built_app
from tornado import web

from handoff_agent import openapi

METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


def app_routes(tmp_path) -> dict[str, set[str]]:
    """path template -> methods the handler implements, from make_app itself."""
    app = built_app(tmp_path / "home")
    out = {}
    for rule in app.wildcard_router.rules:
        handler = rule.target
        path = openapi.template(rule.matcher.regex.pattern.rstrip("$"))
        implemented = {
            m for m in METHODS if getattr(handler, m) is not getattr(web.RequestHandler, m)
        }
        out[path] = implemented
    return out


def test_every_route_and_method_is_described(tmp_path):
    routes = app_routes(tmp_path)
    described = {path: set(ops) for path, ops in openapi.document()["paths"].items()}
    assert routes == described


def test_the_document_is_valid_openapi_3():
    schemathesis.openapi.from_dict(openapi.document()).validate()


def test_the_document_is_served_without_a_token(shared_agent):
    status, body = shared_agent.request("GET", "/api/v1/openapi.json", token=False)
    assert status == 200
    assert body["openapi"].startswith("3.")
    assert "/api/v1/models/{name}/versions" in body["paths"]
    assert body["components"]["schemas"]["Error"]["required"] == ["error"]


def test_readiness_is_public_and_says_ready_while_its_stores_answer(shared_agent):
    # a load balancer's probe holds no token; the outage side is in test_outages.py
    status, body = shared_agent.request("GET", "/api/v1/ready", token=False)
    assert (status, body) == (200, {"status": "ready", "role": "local"})
