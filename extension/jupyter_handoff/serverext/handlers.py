"""Routes under ``/handoff/api``: versions info, and a proxy to the agents that adds their
token, so the browser only ever holds Jupyter's own credentials."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import httpclient, web
from tornado.iostream import StreamClosedError

from handoff_agent.redaction import redact_urls

from .agents import AgentLocator, AgentMissing, Target
from .versions import versions

PATH = re.compile(r"^api/v1(/[A-Za-z0-9._~%-]+)*$")
REQUEST_HEADERS = ("Content-Type", "Accept", "Last-Event-ID")
RESPONSE_HEADERS = ("Content-Type", "Content-Security-Policy", "Content-Disposition")
# The SSE routes, relayed chunk by chunk: the bus, and one model's deployment events.
STREAMED = re.compile(r"^api/v1/(events|models/[^/]+/deployment/events)$")
JUPYTER_PARAMETERS = ("token", "_xsrf")  # Jupyter's own, never forwarded to an agent
CROSS_SITE = {"cross-site", "same-site"}  # Sec-Fetch-Site values from another origin


def agent_query(query: str) -> str:
    """The query as sent, less Jupyter's own credentials (``token``, ``_xsrf``): they are for
    this server, never an agent's (which refuses a parameter its route does not take, and
    would log them)."""
    if not query:
        return ""
    kept = [
        item
        for item in query.split("&")
        if urllib.parse.unquote_plus(item.partition("=")[0]) not in JUPYTER_PARAMETERS
    ]
    return "&".join(kept)


class HandoffHandler(APIHandler):
    auth_resource = "handoff"

    @property
    def locator(self) -> AgentLocator:
        return self.settings["handoff_locator"]

    def write_problem(self, status: int, code: str, message: str, hint: str = "") -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": {"code": code, "message": message, "hint": hint}}))


class InfoHandler(HandoffHandler):
    """``GET /handoff/api/info``: package versions, and where the agents are."""

    @web.authenticated
    @authorized
    async def get(self):
        loop = asyncio.get_running_loop()
        running = await loop.run_in_executor(None, self.locator.running_local)
        cfg = self.locator.config
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(
            json.dumps(
                {
                    **versions(),
                    # Shown in the panel: never a password written into a configured URL.
                    "agent": {
                        "running": bool(running or cfg.agent_url),
                        "url": redact_urls(cfg.agent_url or (running or {}).get("url")),
                        "auto_start": cfg.auto_start,
                    },
                    "central": {
                        "configured": bool(cfg.central_url),
                        "url": redact_urls(cfg.central_url),
                    },
                }
            )
        )


class ProxyHandler(HandoffHandler):
    """``/handoff/api/{local,central}/api/v1/...`` forwarded to that agent with its token.
    The event streams (``STREAMED``) are relayed chunk by chunk."""

    _gone = False

    @web.authenticated
    @authorized
    async def get(self, which: str, path: str):
        problem = self.cross_site()
        if problem:
            return self.write_problem(
                403,
                "cross_site",
                f"A cross-site read of Handoff data is refused ({problem}).",
                "Open the side panel from this Jupyter server's own pages.",
            )
        await self.forward(which, path)

    @web.authenticated
    @authorized
    async def post(self, which: str, path: str):
        await self.forward(which, path)

    @web.authenticated
    @authorized
    async def delete(self, which: str, path: str):
        """The agents' DELETE routes (stopping a watch): Jupyter's auth, its XSRF check for
        a cookie session and the route check, as for a POST; no body is forwarded."""
        await self.forward(which, path)

    def on_connection_close(self) -> None:
        self._gone = True
        super().on_connection_close()

    def cross_site(self) -> str | None:
        """Why this GET looks like another site's page including our data (XSSI), or None.
        A token-authenticated request cannot come from another page; a cookie one must say it
        comes from this origin (jupyter_server's Referer rule, and Sec-Fetch-Site)."""
        if self.skip_check_origin() or self.allow_origin == "*":
            return None
        site = self.request.headers.get("Sec-Fetch-Site", "")
        if site.lower() in CROSS_SITE and not (self.allow_origin or self.allow_origin_pat):
            return f"Sec-Fetch-Site: {site}"
        if not self.check_referer():
            return "Referer missing or from another origin"
        return None

    async def target(self, which: str, fresh: bool = False) -> Target:
        if which == "central":
            return self.locator.central()
        return await self.locator.local(fresh=fresh)

    async def forward(self, which: str, path: str) -> None:
        if not PATH.match(path) or ".." in path:
            return self.write_problem(
                404, "not_found", f"No Handoff route {path!r}.", "Routes start with api/v1/."
            )
        try:
            for attempt in range(2):
                target = await self.target(which, fresh=attempt > 0)
                try:
                    if STREAMED.match(path):
                        return await self.relay_stream(target, path)
                    return await self.relay(target, path)
                except ConnectionRefusedError:
                    if which == "central" or attempt:
                        raise
                    # the agent stopped since we found it: find (or start) it again
        except AgentMissing as e:
            return self.write_problem(e.status, e.code, e.message, e.hint)
        except (ConnectionRefusedError, OSError, httpclient.HTTPClientError) as e:
            name = "central agent" if which == "central" else "Handoff agent"
            return self.write_problem(
                502,
                "agent_unreachable",
                f"The {name} is not answering ({type(e).__name__}).",
                "Check `jupyter handoff status`; the panel retries when you refresh it.",
            )

    def _request(self, target: Target, path: str, **kwargs) -> httpclient.HTTPRequest:
        url = f"{target.url}/{path}"
        query = agent_query(self.request.query)
        if query:
            url += f"?{query}"
        headers = {h: self.request.headers[h] for h in REQUEST_HEADERS if h in self.request.headers}
        if target.token:
            headers["Authorization"] = f"token {target.token}"
        body = self.request.body if self.request.method == "POST" else None
        return httpclient.HTTPRequest(
            url,
            method=self.request.method,
            headers=headers,
            body=body,
            connect_timeout=5,
            follow_redirects=False,
            **kwargs,
        )

    async def relay(self, target: Target, path: str) -> None:
        client = httpclient.AsyncHTTPClient()
        request = self._request(target, path, request_timeout=self.locator.config.timeout)
        resp = await client.fetch(request, raise_error=False)
        if resp.code == 599:  # no HTTP answer at all
            raise resp.error if isinstance(resp.error, OSError) else ConnectionRefusedError()
        if resp.code == 401 and target.setting:
            return self.refused_setting(target, resp.body)
        self.set_status(resp.code)
        self.set_header("X-Content-Type-Options", "nosniff")  # JSON is never run as a script
        for h in RESPONSE_HEADERS:
            if h in resp.headers:
                self.set_header(h, resp.headers[h])
        ctype = resp.headers.get("Content-Type", "application/octet-stream")
        self.finish(resp.body or b"", set_content_type=ctype)  # APIHandler forces JSON otherwise

    def refused_setting(self, target: Target, body: bytes) -> None:
        """The agent refused the configured token: the agent's reason, and the setting that
        holds the token (the agent speaks of headers, which the panel's user never sends)."""
        try:
            error = json.loads(body)["error"]
            message, hint, code = error["message"], error["hint"], error["code"]
        except (ValueError, KeyError, TypeError):
            message, hint, code = "The agent refused the token.", "", "unauthorized"
        fix = f"{target.setting} in jupyter_server_config.py, then restart JupyterLab."
        hint = f"{hint} Then set it as {fix}" if hint else f"Set a token it holds as {fix}"
        self.write_problem(401, code, message, hint)

    async def relay_stream(self, target: Target, path: str) -> None:
        head: dict = {"status": 502, "started": False}

        def on_header(line: str) -> None:
            if line.startswith("HTTP/"):
                head["status"] = int(line.split()[1])
            elif ":" in line:
                name, _, value = line.partition(":")
                if name.strip().title() in RESPONSE_HEADERS:
                    self.set_header(name.strip(), value.strip())

        def on_chunk(chunk: bytes) -> None:
            if self._gone:
                raise StreamClosedError()  # ends the upstream fetch too
            if not head["started"]:
                head["started"] = True
                self.set_status(head["status"])
                self.set_header("Cache-Control", "no-store")
                self.set_header("X-Accel-Buffering", "no")
            self.write(chunk)
            self.flush()

        client = httpclient.AsyncHTTPClient(force_instance=True, max_body_size=1 << 40)
        request = self._request(
            target,
            path,
            request_timeout=7 * 24 * 3600,
            header_callback=on_header,
            streaming_callback=on_chunk,
        )
        try:
            await client.fetch(request, raise_error=False)
        except StreamClosedError:
            return
        finally:
            client.close()
        if not head["started"]:
            raise ConnectionRefusedError()
        if not self._finished and not self._gone:
            self.finish(set_content_type=self._headers.get("Content-Type", "text/event-stream"))


def handlers(base_url: str) -> list:
    from jupyter_server.utils import url_path_join

    root = url_path_join(base_url, "handoff", "api")
    return [
        (url_path_join(root, "info"), InfoHandler),
        (url_path_join(root, r"(local|central)/(.*)"), ProxyHandler),
    ]
