"""Central's monitoring routes: a model's window series, its alerts, and an on-demand run
(with a simulated ``now`` for replays). Thin over monitor.service. On a local agent the two
reads are fetched from its central, so the notebook needs no central token."""

from __future__ import annotations

import json
import math
import urllib.parse

from tornado import httpclient

from ..errors import BadRequest, Conflict, HandoffError
from ..monitor_policy import WINDOWS
from ..names import validate_name
from .pipeline import CentralOnly


def _float_arg(handler, name: str) -> float | None:
    raw = handler.get_query_argument(name, None)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be epoch seconds, e.g. {name}=1767225600.")
    return value


class FromCentral(CentralOnly):
    async def relay(self, name: str, what: str) -> bool:
        """On a local agent: answer with central's reply for the same model. True if done."""
        if self.agent.role == "central":
            return False
        central = self.agent.destinations.get("central")
        url, token = central.target() if central is not None else ("", "")
        if not url:
            raise Conflict(
                "Monitoring runs at central, and this agent hands off to no running central.",
                "Start central (`jupyter handoff serve --role central`), or ask it directly.",
                code="central_down",
            )
        query = urllib.parse.urlencode(
            {k: v[-1].decode() for k, v in self.request.query_arguments.items()}
        )
        try:
            resp = await httpclient.AsyncHTTPClient().fetch(
                f"{url}/api/v1/models/{name}/{what}" + (f"?{query}" if query else ""),
                headers={"Authorization": f"token {token}"},
                request_timeout=60,
                raise_error=False,
            )
        except OSError as e:
            raise Conflict(
                f"Central is not answering ({type(e).__name__}).", code="central_down"
            ) from None
        try:
            body = json.loads(resp.body)
        except (TypeError, ValueError):
            body = {}
        if resp.code != 200:
            err = body.get("error") or {"message": f"central answered {resp.code}"}
            raise HandoffError(
                f"Central: {err.get('message')}",
                err.get("hint", ""),
                status=409 if resp.code >= 500 or resp.code == 599 else resp.code,
                code=err.get("code", "central_error"),
            )
        self.write_json(body)
        return True


class MonitorHandler(FromCentral):
    """The closed windows (and the rolling one) as time series, with the policy's bounds."""

    async def get(self, name: str):
        validate_name(name)
        if await self.relay(name, "monitor"):
            return
        kind = self.get_query_argument("window", None)
        if kind is not None and kind not in (*WINDOWS, "rolling"):
            raise BadRequest(
                f"Unknown window {kind!r}.", f"Use one of {', '.join((*WINDOWS, 'rolling'))}."
            )
        agent = self.agent
        rows = await agent.read(agent.registry.windows_of, name, kind, _float_arg(self, "since"))
        firing = await agent.read(agent.registry.alerts_of, name, "firing")
        self.write_json(
            {
                "model": name,
                "windows": rows,
                "firing": len(firing),
                "policy": agent.monitor.settings.describe(),
            }
        )


class AlertsHandler(FromCentral):
    async def get(self, name: str):
        validate_name(name)
        if await self.relay(name, "alerts"):
            return
        state = self.get_query_argument("state", None)
        if state not in (None, "firing", "cleared"):
            raise BadRequest("state is firing or cleared.", "e.g. ?state=firing")
        agent = self.agent
        self.write_json(
            {"model": name, "alerts": await agent.read(agent.registry.alerts_of, name, state)}
        )


class MonitorRunHandler(CentralOnly):
    """Admin: evaluate the windows closed by ``now`` (epoch seconds; default the clock)."""

    roles = {"POST": ("admin",)}

    async def post(self, name: str):
        validate_name(name)
        self.central()
        now = self.json_body().get("now")
        if now is not None and (
            isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now)
        ):
            raise BadRequest("now must be epoch seconds (a number).", '{"now": 1767225600}')
        self.write_json(await self.agent.monitor_run(name, now))
