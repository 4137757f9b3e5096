"""One rule for query parameters on every route (``BaseHandler.check_query``): a parameter
the route does not take, or one given twice, is a 400 in the one error shape, on a local
agent, on central and on central's model server. The routes come from the route tables, so
a new route cannot forget the rule; what each takes comes from the OpenAPI document.

One local agent and one central for the module; the requests are refused before any
handler runs, so no model needs to exist."""

from __future__ import annotations

import pytest
from agent_support import assert_error, built_app, concrete, implements, local_and_central
from serving.serving_support import Client, serving_url

from handoff_agent import openapi
from handoff_agent.serving.handlers import routes as serving_routes

METHODS = ("get", "post", "delete")
BUSTER = "1712345678901"  # JupyterLab's ServerConnection appends ?<Date.getTime()>


@pytest.fixture(scope="module")
def agents(tmp_path_factory, backend):
    yield from local_and_central(tmp_path_factory.mktemp("query"), backend)


def agent_operations(tmp_path_factory) -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, path, the query parameters it takes) of every route make_app serves."""
    app = built_app(tmp_path_factory.mktemp("routes") / "home")
    out = []
    for rule in app.wildcard_router.rules:
        path = openapi.template(rule.matcher.regex.pattern.rstrip("$"))
        handler = rule.target
        for method in METHODS:
            if implements(handler, method):
                takes = rule.target_kwargs["query"].get(method.upper(), ())
                out.append((method.upper(), concrete(path), takes))
    return out


def call(agent, method: str, path: str):
    body = {} if method == "POST" else None
    return agent.request(method, path, body)


@pytest.mark.parametrize("which", ["local", "central"])
def test_every_route_refuses_a_parameter_it_does_not_take(agents, which, tmp_path_factory):
    agent = agents[which]
    operations = agent_operations(tmp_path_factory)
    assert len(operations) > 40  # the table was read, not an empty one
    for method, path, takes in operations:
        status, body = call(agent, method, f"{path}?bogus=1")
        err = assert_error(status, body, 400, "unknown_parameter")
        assert "'bogus'" in err["message"], (method, path, err)
        listed = f"Its parameters are {', '.join(takes)}." if takes else "It takes no query"
        assert err["hint"].startswith(listed), (method, path, err)


@pytest.mark.parametrize("which", ["local", "central"])
def test_every_parameter_a_route_takes_is_refused_twice(agents, which, tmp_path_factory):
    agent = agents[which]
    for method, path, takes in agent_operations(tmp_path_factory):
        for name in takes:
            status, body = call(agent, method, f"{path}?{name}=1&{name}=2")
            err = assert_error(status, body, 400, "repeated_parameter")
            assert err["message"].startswith(f"{name} is given 2 times"), (method, path, err)


def test_the_typo_and_the_repeat_of_the_report(agents):
    """What a user sees: the route named, the parameter quoted (control characters out, cut
    to 40), and the parameters it takes."""
    local = agents["local"]
    status, body = local.request("GET", "/api/v1/models?limt=5")
    err = assert_error(status, body, 400, "unknown_parameter")
    assert err["message"] == "GET /api/v1/models has no parameter 'limt'."
    assert err["hint"] == "Its parameters are limit, after."
    status, body = local.request("GET", "/api/v1/models?limit=1&limit=2")
    err = assert_error(status, body, 400, "repeated_parameter")
    assert err["message"] == "limit is given 2 times; GET /api/v1/models takes each parameter once."
    assert err["hint"] == "Give limit once."
    status, body = local.request("GET", "/api/v1/whoami?%01" + "x" * 60 + "=1")
    err = assert_error(status, body, 400, "unknown_parameter")
    assert err["message"] == f"GET /api/v1/whoami has no parameter '{'x' * 40}'."
    status, body = local.request("GET", "/api/v1/whoami?token=abc")
    err = assert_error(status, body, 400, "unknown_parameter")
    assert "Authorization header" in err["hint"]


def test_the_check_comes_after_the_token_and_the_role(agents):
    central = agents["central"]
    status, body = central.request("GET", "/api/v1/audit?bogus=1", token=False)
    assert_error(status, body, 401)
    analyst = central.make_token("ann", "analyst")
    status, body = central.request("GET", "/api/v1/audit?bogus=1", token=analyst)
    assert_error(status, body, 403, "forbidden_role")


def test_jupyterlab_s_cache_buster_is_no_parameter(agents):
    """The panel's every call carries one; refusing it would break the panel."""
    for which in ("local", "central"):
        status, body = agents[which].request("GET", f"/api/v1/models?limit=5&{BUSTER}")
        assert status == 200, body
        status, body = agents[which].request("GET", f"/api/v1/meta?{BUSTER}")
        assert status == 200, body


def test_the_model_server_has_the_same_rule(agents):
    central = agents["central"]
    client = Client(serving_url(central), central.token)
    for pattern, handler, _ in serving_routes():
        path = concrete(openapi.template(pattern.rstrip("$")))
        method = "POST" if implements(handler, "post") else "GET"
        body = {} if method == "POST" else None
        status, _, answer = client.call(method, f"{path}?bogus=1", body)
        err = assert_error(status, answer, 400, "unknown_parameter")
        assert "'bogus'" in err["message"], (path, err)
    status, _, answer = client.call("POST", "/invocations?model=a&model=b", {})
    assert_error(status, answer, 400, "repeated_parameter")
    status, _, answer = client.call("POST", "/invocations?modle=churn", {})
    err = assert_error(status, answer, 400, "unknown_parameter")
    assert err["hint"] == "Its parameters are model, version."
