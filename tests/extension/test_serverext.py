"""The server extension: /handoff/api proxies to the agents with Jupyter's own auth.

pytest-jupyter's fixtures are imported into this module only (not registered as a plugin),
so its autouse fixtures and event-loop handling touch no other test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403
from pytest_jupyter.pytest_tornasync import *  # noqa: F403
from support import bundle_bytes, wait_checked
from tornado.httpclient import HTTPClientError

from handoff_agent import runtime
from handoff_agent._version import __version__

ROOT = Path(__file__).parents[2]


@pytest.fixture
def handoff_config():
    """Extra c.HandoffServer settings for one test."""
    return {}


@pytest.fixture
def jp_server_config(handoff_config):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_handoff": True}},
        "HandoffServer": handoff_config,
    }


@pytest.fixture
def fetch(jp_fetch, jp_asyncio_loop):
    """jp_fetch, run to completion; returns (status, headers, parsed JSON or text)."""

    def go(*parts, **kwargs):
        kwargs.setdefault("raise_error", False)
        # jp_fetch makes its Future before the loop runs: it needs the loop set as current,
        # which an earlier test's asyncio.run() in this worker leaves unset.
        asyncio.set_event_loop(jp_asyncio_loop)
        resp = jp_asyncio_loop.run_until_complete(jp_fetch("handoff", "api", *parts, **kwargs))
        text = resp.body.decode() if resp.body else ""
        try:
            return resp.code, resp.headers, json.loads(text)
        except ValueError:
            return resp.code, resp.headers, text

    return go


@pytest.fixture
def proxied(agent, handoff_config):
    """``agent`` is the one the extension forwards to (configured, as an admin would)."""
    handoff_config.update(agent_url=agent.url, agent_token=agent.token, auto_start=False)
    return agent


def test_proxy_forwards_with_the_agents_token(proxied, fetch):
    # Given a version pushed to the agent
    status, _ = proxied.push_bytes("churn", bundle_bytes("churn"))
    assert status == 201
    # When the browser asks through Jupyter, without the agent's token
    status, _, body = fetch("local", "api", "v1", "models")
    # Then the extension adds it
    assert status == 200
    assert [m["name"] for m in body["models"]] == ["churn"]
    status, _, body = fetch("local", "api", "v1", "models", "churn", "versions", "1")
    assert status == 200 and body["number"] == 1


def test_report_keeps_the_sandbox(proxied, fetch):
    proxied.push_bytes("churn", bundle_bytes("churn"))
    wait_checked(proxied, "churn", 1)
    path = ("local", "api", "v1", "models", "churn", "versions", "1", "report")
    status, headers, body = fetch(*path, params={"format": "html"})
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"].startswith("sandbox")
    assert "churn" in body


def test_the_panels_query_reaches_the_agent_as_its_route_takes_it(proxied, fetch, jp_auth_header):
    """JupyterLab's ServerConnection adds a cache buster (``?<a number>``) to every call, and
    Jupyter's own ``token``/``_xsrf`` may ride in a URL: the agent, which refuses a parameter
    its route does not take, must see neither as one. A misspelt one still comes back."""
    # Given a version pushed to the agent
    assert proxied.push_bytes("churn", bundle_bytes("churn"))[0] == 201
    jupyter_token = jp_auth_header["Authorization"].split()[-1]
    path = ("local", "api", "v1", "models", "churn", "versions")
    # When the panel asks as JupyterLab sends it, with Jupyter's credentials in the query
    extra = {"1712345678901": "", "token": jupyter_token, "_xsrf": "x"}
    status, _, body = fetch(*path, params={"limit": "20", **extra})
    # Then the agent answers
    assert status == 200, body
    assert [v["number"] for v in body["versions"]] == [1]
    # and a misspelt parameter is the agent's 400, naming it
    status, _, body = fetch(*path, params={"limt": "20", **extra})
    assert status == 400, body
    assert body["error"]["code"] == "unknown_parameter"
    assert body["error"]["message"].endswith("has no parameter 'limt'.")


def test_agent_errors_pass_through(proxied, fetch):
    status, _, body = fetch("local", "api", "v1", "models", "nope", "versions")
    assert status == 404
    assert set(body["error"]) == {"code", "message", "hint"}


def test_auth_is_required(proxied, fetch):
    # Given no Jupyter token: neither the proxy nor the info route answers
    for parts in [("local", "api", "v1", "models"), ("info",)]:
        status, _, _ = fetch(*parts, headers={"Authorization": "token wrong"})
        assert status == 403, parts
    # and a POST without Jupyter's auth never reaches the agent
    status, _, _ = fetch(
        "local",
        "api",
        "v1",
        "models",
        method="POST",
        body="{}",
        headers={"Authorization": "token wrong", "Content-Type": "application/json"},
    )
    assert status == 403


def test_only_api_routes_are_forwarded(proxied, fetch):
    for path in ["etc/passwd", "api/v2/models", "api/v1/../../x"]:
        status, _, _ = fetch("local", *path.split("/"))
        assert status == 404, path


def test_agent_starts_on_demand(fetch, jp_runtime_dir):
    # Given no agent is running
    assert runtime.read() is None
    # When the panel asks for the models
    try:
        status, _, body = fetch("local", "api", "v1", "models", request_timeout=60)
        # Then an agent was started, detached, and answered
        assert status == 200 and body == {"models": []}
        assert Path(jp_runtime_dir, "handoff-local.json").exists()
    finally:
        info = runtime.read()
        if info:  # stopping it removes its runtime file, so look before this
            os.kill(int(info["pid"]), signal.SIGTERM)
    assert info


@pytest.mark.parametrize("handoff_config", [{"auto_start": False}])
def test_no_agent_and_no_auto_start_says_what_to_do(fetch):
    status, _, body = fetch("local", "api", "v1", "models")
    assert status == 503
    assert body["error"]["code"] == "agent_not_running"
    assert "jupyter handoff serve" in body["error"]["hint"]


def test_central_needs_configuration(fetch):
    status, _, body = fetch("central", "api", "v1", "models")
    assert status == 404
    assert "c.HandoffServer.central_url" in body["error"]["hint"]


@pytest.fixture
def central(agent, handoff_config):
    handoff_config.update(central_url=agent.url, central_token=agent.token)
    return agent


@pytest.fixture
def configured_by_url(agent, handoff_config, request):
    """``agent`` configured by URL (``request.param``: the URL's and the token's setting,
    and the token, if any), before the Jupyter server starts."""
    url_name, token_name, token = request.param
    handoff_config.update({url_name: agent.url, token_name: token, "auto_start": False})
    return agent


@pytest.mark.parametrize(
    "configured_by_url, which",
    [
        (("agent_url", "agent_token", ""), "local"),
        (("central_url", "central_token", ""), "central"),
    ],
    indirect=["configured_by_url"],
)
def test_a_configured_agent_without_its_token_names_the_setting(configured_by_url, fetch, which):
    """An agent_url without agent_token got the agent's 401 about HTTP headers."""
    # Given an agent configured by URL, and its token left out
    prefix = "agent" if which == "local" else "central"
    url_name, token_name = f"{prefix}_url", f"{prefix}_token"
    # When the panel asks for it
    status, _, body = fetch(which, "api", "v1", "models")
    # Then the answer names the setting to fill in, in one line
    assert status == 401 and body["error"]["code"] == "token_not_configured", body
    assert body["error"]["message"] == (
        f"c.HandoffServer.{url_name} is set but c.HandoffServer.{token_name} is empty: set it "
        "in jupyter_server_config.py, then restart JupyterLab."
    )
    assert "\n" not in body["error"]["message"] + body["error"]["hint"]
    assert "Authorization" not in body["error"]["hint"]


@pytest.mark.parametrize(
    "configured_by_url", [("agent_url", "agent_token", "wrong-" * 8)], indirect=True
)
def test_a_wrong_configured_token_names_the_setting(configured_by_url, fetch):
    status, _, body = fetch("local", "api", "v1", "models")
    assert status == 401 and body["error"]["code"] == "unauthorized", body
    assert body["error"]["hint"] == (
        "`jupyter handoff status` shows the running agent's token. Then set it as "
        "c.HandoffServer.agent_token in jupyter_server_config.py, then restart JupyterLab."
    )


def test_central_is_proxied_when_configured(central, fetch):
    status, _, body = fetch("central", "api", "v1", "models")
    assert status == 200 and body == {"models": []}


def test_events_stream_through_the_proxy(proxied, jp_fetch, jp_asyncio_loop):
    seen: list[bytes] = []

    class Done(Exception):
        pass

    def on_chunk(chunk: bytes) -> None:
        seen.append(chunk)
        if b"event: version" in b"".join(seen):
            raise Done

    async def watch():
        fut = jp_fetch(
            "handoff",
            "api",
            "local",
            "api",
            "v1",
            "events",
            params={"model": "churn"},
            streaming_callback=on_chunk,
            request_timeout=30,
        )
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:  # connected
            await asyncio.sleep(0.05)
        proxied.push_bytes("churn", bundle_bytes("churn"))
        with contextlib.suppress(Done, HTTPClientError):
            await fut

    jp_asyncio_loop.run_until_complete(watch())
    text = b"".join(seen).decode()
    assert "event: version" in text and '"model": "churn"' in text


@pytest.fixture
def central_role(agent_factory, handoff_config):
    """A central agent (``--role central``), configured as the extension's central."""
    central = agent_factory("--role", "central")
    handoff_config.update(central_url=central.url, central_token=central.token)
    return central


def test_deployment_events_stream_through_the_proxy(
    central_role, jp_fetch, jp_asyncio_loop, tmp_path
):
    """A model's deployment events (what the panel's Deployments view follows) are relayed
    as they come, not held until the stream ends: central's opening line arrives at once."""
    # (a model central knows: one it monitors from an imported prediction log)
    log = pd.DataFrame({"a": [0.5] * 5, "prediction": [1] * 5, "time": time.time() - 60.0})
    log.to_parquet(tmp_path / "log.parquet")
    imported = central_role.cli("monitor", "import", "churn", str(tmp_path / "log.parquet"))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    seen: list[bytes] = []

    class Done(Exception):
        pass

    def on_chunk(chunk: bytes) -> None:
        seen.append(chunk)
        raise Done

    async def watch():
        with contextlib.suppress(Done, HTTPClientError):
            await jp_fetch(
                *("handoff", "api", "central", "api", "v1", "models", "churn"),
                *("deployment", "events"),
                streaming_callback=on_chunk,
                request_timeout=30,
            )

    asyncio.set_event_loop(jp_asyncio_loop)
    jp_asyncio_loop.run_until_complete(watch())
    assert b"".join(seen).startswith(b": connected")


@pytest.mark.parametrize("handoff_config", [{"auto_start": False}])
def test_info_reports_both_versions(fetch):
    status, _, body = fetch("info")
    assert status == 200
    assert body["python_version"] == __version__
    assert {"labextension_version", "match", "fix", "agent", "central"} <= set(body)
    assert body["central"]["configured"] is False
    assert "pip install" in body["fix"]


@pytest.mark.parametrize(
    "handoff_config",
    [
        {
            "auto_start": False,
            "agent_url": "http://ana:agent-pw-1@127.0.0.1:9",
            "central_url": "https://it:central-pw-2@central.example:8890",
        }
    ],
)
def test_info_never_sends_a_password_written_into_an_agent_url(fetch):
    """The panel's info showed c.HandoffServer.central_url and agent_url to the browser as
    configured, passwords included."""
    status, _, body = fetch("info")
    assert status == 200, body
    assert body["agent"]["url"] == "http://ana:***@127.0.0.1:9"
    assert body["central"] == {"configured": True, "url": "https://it:***@central.example:8890"}
    assert "-pw-" not in json.dumps(body)


def test_labextension_version_is_the_python_version():
    """One version source: the npm package must say the same as the Python one."""
    package = json.loads((ROOT / "labextension" / "package.json").read_text())
    assert package["version"] == __version__


def test_server_extension_is_declared_for_auto_enable():
    path = ROOT / "extension" / "jupyter-config" / "server-config" / "jupyter_handoff.json"
    config = json.loads(path.read_text())
    assert config == {"ServerApp": {"jpserver_extensions": {"jupyter_handoff": True}}}
    import jupyter_handoff

    assert jupyter_handoff._jupyter_server_extension_points() == [{"module": "jupyter_handoff"}]


def test_a_request_header_never_chooses_the_agent(proxied, agent_factory, fetch):
    # Given the configured agent holds "churn" and another agent runs on this machine
    other = agent_factory()
    assert proxied.push_bytes("churn", bundle_bytes("churn"))[0] == 201
    # When a page asks the proxy to talk to the other agent (with this agent's token)
    status, _, body = fetch(
        "local", "api", "v1", "models", headers={"X-Handoff-Agent-Url": other.url}
    )
    # Then the request still goes to the configured agent only
    assert status == 200
    assert [m["name"] for m in body["models"]] == ["churn"]


@pytest.fixture
def cookie_like(proxied, jp_serverapp):
    """A server without a token, so requests are not token-authenticated (like a browser
    with a login cookie): the origin and Referer rules apply to them."""
    jp_serverapp.identity_provider.token = ""
    return proxied


@pytest.fixture
def jp_auth_header(jp_serverapp):
    """pytest-jupyter's, but none at all when the server has no token."""
    token = jp_serverapp.identity_provider.token
    return {"Authorization": f"token {token}"} if token else {}


@pytest.mark.parametrize(
    "headers",
    [
        {"Referer": "http://evil.example/page"},
        {},  # no Referer at all: a <script src> from a page that hides it
        {"Sec-Fetch-Site": "cross-site", "Referer": "SAME"},
    ],
    ids=["foreign-referer", "no-referer", "sec-fetch-site"],
)
def test_cross_site_reads_are_refused(cookie_like, fetch, jp_serverapp, headers):
    host = f"127.0.0.1:{jp_serverapp.port}"
    headers = {k: (f"http://{host}/lab" if v == "SAME" else v) for k, v in headers.items()}
    status, _, body = fetch("local", "api", "v1", "models", headers=headers)
    assert status == 403
    assert body["error"]["code"] == "cross_site"


def test_same_origin_reads_pass_and_are_not_scripts(cookie_like, fetch, jp_serverapp):
    host = f"localhost:{jp_serverapp.port}"
    status, headers, body = fetch(
        "local",
        "api",
        "v1",
        "models",
        headers={"Referer": f"http://{host}/lab", "Sec-Fetch-Site": "same-origin", "Host": host},
    )
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert isinstance(body, dict)  # an object literal is not a valid script


def test_a_delete_is_forwarded_with_the_same_checks(proxied, fetch, tmp_path):
    """Stopping a watch (the one DELETE route) works through the proxy, and only with
    Jupyter's auth, like a POST."""
    data = tmp_path / "churn.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0]}).to_csv(data, index=False)
    status, w = proxied.request("POST", "/api/v1/watches", {"model": "churn", "source": str(data)})
    assert status == 201, w
    route = ("local", "api", "v1", "watches", str(w["id"]))
    # Without Jupyter's token the DELETE never reaches the agent
    status, _, _ = fetch(*route, method="DELETE", headers={"Authorization": "token wrong"})
    assert status == 403
    assert [x["id"] for x in proxied.request("GET", "/api/v1/watches")[1]["watches"]] == [w["id"]]
    # With it, the agent stops watching, and says so through the proxy
    status, _, body = fetch(*route, method="DELETE")
    assert status in (200, 204), body
    assert proxied.request("GET", "/api/v1/watches")[1]["watches"] == []
    # and a route that is not the agents' API is refused as for the other methods
    status, _, _ = fetch("local", "etc", "passwd", method="DELETE")
    assert status == 404


def test_a_cookie_delete_needs_jupyters_xsrf_token(cookie_like, fetch, jp_serverapp, tmp_path):
    data = tmp_path / "churn.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0]}).to_csv(data, index=False)
    body = {"model": "churn", "source": str(data)}
    status, w = cookie_like.request("POST", "/api/v1/watches", body)
    assert status == 201, w
    host = f"localhost:{jp_serverapp.port}"
    same = {"Referer": f"http://{host}/lab", "Sec-Fetch-Site": "same-origin", "Host": host}
    # A page that cannot read Jupyter's _xsrf cookie cannot stop a watch
    route = ("local", "api", "v1", "watches", str(w["id"]))
    status, _, _ = fetch(*route, method="DELETE", headers=same)
    assert status == 403
    assert len(cookie_like.request("GET", "/api/v1/watches")[1]["watches"]) == 1
