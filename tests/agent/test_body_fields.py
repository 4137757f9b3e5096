"""One rule for JSON request bodies on every route (``BaseHandler.check_fields``), as for query
parameters: a top-level key the route's OpenAPI operation does not declare is a 400
unknown_field in the one error shape, naming the key (with the field it is nearest to) and
listing the fields the route takes, and nothing changes. A misspelt key was read as if not
given: ``{"nwo": …}`` evaluated the monitor at the real clock, ``"expire"`` made a token that
never ends. The routes come from the route tables, so a new route cannot forget the rule; the
bodies free-form by design are the one list ``openapi.FREE_FORM_BODIES``.

One local agent and one central for the module; the requests are refused before anything is
read or written, so no model needs to exist."""

from __future__ import annotations

import pytest
from agent_support import assert_error, built_app, concrete, implements, local_and_central

from handoff_agent import openapi
from handoff_agent.serving.handlers import routes as serving_routes
from handoff_agent.vocabulary import WATCH_KEYS

BODY_METHODS = ("post", "put", "patch")


@pytest.fixture(scope="module")
def agents(tmp_path_factory, backend):
    yield from local_and_central(tmp_path_factory.mktemp("fields"), backend)


def body_operations(tmp_path_factory) -> list[tuple[str, str, tuple[str, ...] | None]]:
    """(method, path template, the body fields it takes, or None) of every route make_app
    serves with a method that carries a body."""
    app = built_app(tmp_path_factory.mktemp("routes") / "home")
    out = []
    for rule in app.wildcard_router.rules:
        path = openapi.template(rule.matcher.regex.pattern.rstrip("$"))
        for method in BODY_METHODS:
            if implements(rule.target, method):
                takes = rule.target_kwargs["fields"].get(method.upper())
                out.append((method.upper(), path, takes))
    return out


def misspelt(field: str) -> str:
    return field + field[-1]  # "now" -> "noww": nearest to the field it was meant to be


def audit_head(agent) -> str:
    status, body = agent.request("GET", "/api/v1/audit?limit=1")
    assert status == 200, body
    return body["head"]


def test_every_json_body_is_checked_or_free_form_by_design(tmp_path_factory):
    """No route with a body escapes both the rule and the list of exemptions, and the list
    names only real routes of the agent or the model server."""
    operations = body_operations(tmp_path_factory)
    assert len(operations) > 10  # the table was read, not an empty one
    served = {
        ("POST", openapi.template(p.rstrip("$")))
        for p, h, _ in serving_routes()
        if implements(h, "post")
    }
    for method, path, takes in operations:
        if takes is None:
            op = openapi.PATHS[path][method.lower()]
            schema = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            declared = "properties" in schema.get("schema", {})
            assert (method, path) in openapi.FREE_FORM_BODIES or not declared, (method, path)
        else:
            assert takes and (method, path) not in openapi.FREE_FORM_BODIES, (method, path)
            op = openapi.document()["paths"][path][method.lower()]
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert schema["additionalProperties"] is False, (method, path)  # documented
    assert served <= set(openapi.FREE_FORM_BODIES)  # the model server's bodies: inputs
    known = {(m, p) for m, p, _ in operations} | served
    assert set(openapi.FREE_FORM_BODIES) <= known, set(openapi.FREE_FORM_BODIES) - known


def test_every_checked_route_refuses_a_misspelt_key_and_changes_nothing(agents, tmp_path_factory):
    central = agents["central"]
    checked = [(m, p, t) for m, p, t in body_operations(tmp_path_factory) if t is not None]
    assert len(checked) >= 12, checked
    head = audit_head(central)
    for method, path, takes in checked:
        bad = misspelt(takes[0])
        status, body = central.request(method, concrete(path), {bad: 1})
        err = assert_error(status, body, 400, "unknown_field")
        assert err["message"] == (
            f"{method} {path} has no body field {bad!r} (did you mean {takes[0]!r}?)."
        ), err
        assert err["hint"] == f"Its fields are {', '.join(takes)}.", err
    assert audit_head(central) == head  # no row: nothing changed


def test_a_local_agent_has_the_same_rule(agents, tmp_path_factory):
    """The routes a local agent answers itself, or relays (a trial prediction): refused there,
    never passed on to central. The others are central's (404 not_central first)."""
    local = agents["local"]
    refused = []
    for method, path, takes in body_operations(tmp_path_factory):
        if takes is None:
            continue
        status, body = local.request(method, concrete(path), {"bogus": 1})
        if status == 404 and body["error"]["code"] == "not_central":
            continue
        assert_error(status, body, 400, "unknown_field")
        refused.append(path)
    assert {
        "/api/v1/models/{name}/predict",
        "/api/v1/models/{name}/prune",
        "/api/v1/models/{name}/versions/{number}/forward",
        "/api/v1/tokens",
        "/api/v1/trust",
        "/api/v1/watches",
    } <= set(refused), refused


def test_a_misspelt_expiry_makes_no_token(agents):
    """What it saves a user from: ``expire`` was ignored and the token never ended."""
    central = agents["central"]
    before = central.sql("SELECT count(*) AS n FROM tokens")[0]["n"]
    body = {"user": "ann", "roles": ["reviewer"], "expire": "1h", "colour": "red"}
    status, out = central.request("POST", "/api/v1/tokens", body)
    err = assert_error(status, out, 400, "unknown_field")
    assert err["message"] == (
        "POST /api/v1/tokens has no body fields 'expire' (did you mean 'expires'?), 'colour'."
    )
    assert err["hint"] == "Its fields are user, roles, models, expires."
    assert central.sql("SELECT count(*) AS n FROM tokens")[0]["n"] == before
    # the same body spelt right is taken
    body = {"user": "ann", "roles": ["reviewer"], "expires": "1h"}
    status, out = central.request("POST", "/api/v1/tokens", body)
    assert status == 201 and out["expires"], out


def test_a_key_is_cut_and_stripped_when_quoted(agents):
    status, out = agents["local"].request("POST", "/api/v1/trust", {"\x01" + "x" * 60: 1})
    err = assert_error(status, out, 400, "unknown_field")
    assert err["message"] == f"POST /api/v1/trust has no body field '{'x' * 40}'."


def test_values_below_the_top_level_are_the_caller_s(agents):
    """Only the top level is the route's: a label (or a model's inputs, a watch's params)
    may hold any keys. Here the route's own checks answer (central has no model churn)."""
    central = agents["central"]
    body = {"labels": [{"request_id": "r1", "label": {"anything": 1}}]}
    status, out = central.request("POST", "/api/v1/models/churn/feedback", body)
    assert_error(status, out, 404)


def test_the_watch_schema_is_the_watch_s_keys():
    """The one list a watch's settings come from (the policy's [[watch]] tables too) and the
    API's schema agree, so a setting the service reads is never refused at the door."""
    assert openapi.body_names("/api/v1/watches")["POST"] == WATCH_KEYS
