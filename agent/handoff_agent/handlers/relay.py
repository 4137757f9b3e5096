"""A local agent answers some of central's reads (deployments, predictions, monitoring) by
asking its central with its own central token: the notebook never holds or learns one."""

from __future__ import annotations

import json
from collections.abc import Callable

from tornado import httpclient

from ..errors import Conflict, HandoffError, Unavailable
from .pipeline import CentralOnly


class FromCentral(CentralOnly):
    def central_target(self) -> Callable[[], tuple[str, str]]:
        return target_of(self.agent)

    async def from_central(self, method: str, path: str, body: dict | None = None) -> dict:
        return await ask_central(self.agent, method, path, body)

    async def relay(self, name: str, what: str) -> bool:
        """On a local agent: answer with central's reply to the same model's ``what``, with
        the same query. True if done; False at central, which answers itself."""
        if self.agent.role == "central":
            return False
        # The query as sent: central decodes and checks it (a byte that is not UTF-8 was a
        # 500 here; a repeated parameter lost all but its last value)
        query = self.request.query
        path = f"/api/v1/models/{name}/{what}" + (f"?{query}" if query else "")
        self.write_json(await self.from_central("GET", path))
        return True


CENTRAL_DOWN_HINT = (
    "Trying again will work once central is back; "
    "`jupyter handoff status --role central` on central's machine says if it runs."
)


def target_of(agent) -> Callable[[], tuple[str, str]]:
    """What gives central's (url, token) now; a 409 when this agent has no central."""
    central = agent.destinations.get("central")
    target = central.target if central is not None else (lambda: ("", ""))
    if not target()[0]:
        raise Conflict(
            "Deployments and monitoring live at central, and this agent hands models to "
            "no running central.",
            "Start central (`jupyter handoff serve --role central`), or set "
            "c.CentralDestination.url.",
            code="central_down",
        )
    return target


async def ask_central(agent, method: str, path: str, body: dict | None = None) -> dict:
    """Central's JSON answer to ``path``, asked with this agent's central token; its errors
    keep their code, message and hint (no answer, or a 5xx, is a 503 central_down). The relaying
    handlers and the local agent's own reads of central (the watches' retrain requests)."""
    url, token = target_of(agent)()  # refused (409) unless a central destination is set
    timeout = agent.destinations["central"].timeout
    try:
        resp = await httpclient.AsyncHTTPClient().fetch(
            url + path,
            method=method,
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
            body=None if body is None else json.dumps(body),
            request_timeout=timeout,
            raise_error=False,
        )
    except (OSError, httpclient.HTTPClientError) as e:  # refused, reset, or timed out
        raise CentralDown(
            f"Central is not answering ({type(e).__name__}: {e}).", CENTRAL_DOWN_HINT
        ) from None
    try:
        data = json.loads(resp.body or b"{}")
    except ValueError:
        data = {}
    if resp.code != 200:
        err = data.get("error") if isinstance(data, dict) else None
        err = err if isinstance(err, dict) else {}
        message = f"Central: {err.get('message') or f'answered {resp.code}'}"
        if resp.code >= 500:
            raise CentralDown(message, err.get("hint", ""))
        if resp.code == 401:
            raise token_refused(err)
        raise HandoffError(
            message, err.get("hint", ""), status=resp.code, code=err.get("code", "central_error")
        )
    return data


def token_refused(err: dict) -> Conflict:
    """Central's 401 to a relayed call is about this agent's central token, not the
    caller's: a 409 that says so, with central's reason (e.g. it expired)."""
    why = f" ({err['message']})" if err.get("message") else ""
    return Conflict(
        f"Central refused this agent's central token{why}.",
        "Give the local agent a token central issued: c.CentralDestination.token "
        "(`jupyter handoff token create --user U --role analyst` at central).",
        code="central_token",
    )


class CentralDown(Unavailable):
    """Central did not answer, or failed: a 503 with Retry-After, since trying again will
    work once it is back (no central configured at all is a 409: retrying will not help)."""

    code = "central_down"
    retry_after = 5
