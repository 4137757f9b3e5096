"""Central's monitoring routes: a model's window series, its alerts, and an on-demand run
(with a simulated ``now`` for replays). Thin over monitor.service. On a local agent the two
reads are fetched from its central, so the notebook needs no central token."""

from __future__ import annotations

import math
import time

from ..errors import BadRequest
from ..monitor import windows
from ..monitor_policy import WINDOWS
from ..names import validate_name
from .base import int_arg
from .pipeline import CentralOnly
from .relay import FromCentral


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


class MonitorHandler(FromCentral):
    """The closed windows (and the rolling one) as time series, with the policy's bounds."""

    async def get(self, name: str):
        validate_name(name)
        if await self.relay(name, "monitor"):
            return
        await self.known_model(name, monitored=True)
        kind = self.get_query_argument("window", None)
        if kind is not None and kind not in (*WINDOWS, "rolling"):
            raise BadRequest(
                f"Unknown window {kind!r}.", f"Use one of {', '.join((*WINDOWS, 'rolling'))}."
            )
        agent = self.agent
        since, limit = _float_arg(self, "since"), int_arg(self, "limit", 1000, 1, 1000)
        rows = await agent.read(agent.registry.windows_of, name, kind, since, limit)
        for row in rows:
            row["readings"] = agent.monitor.marks(row)
        firing = await agent.read(agent.registry.alerts_of, name, "firing")
        self.write_json(
            {
                "model": name,
                "windows": rows,
                "firing": len(firing),
                "traffic": await agent.read(agent.deployments.traffic_of, name),
                "policy": agent.monitor.settings.describe(),
            }
        )


class AlertsHandler(FromCentral):
    async def get(self, name: str):
        validate_name(name)
        if await self.relay(name, "alerts"):
            return
        await self.known_model(name, monitored=True)
        state = self.get_query_argument("state", None)
        if state not in (None, "firing", "cleared"):
            raise BadRequest("state is firing or cleared.", "e.g. ?state=firing")
        agent = self.agent
        self.write_json(
            {"model": name, "alerts": await agent.read(agent.registry.alerts_of, name, state)}
        )


class MonitorRunHandler(CentralOnly):
    """Admin: evaluate the windows closed by ``now`` (epoch seconds; default the clock, and
    never past it: ``windows.not_after_clock``)."""

    roles = {"POST": ("admin",)}
    does = "run the monitor"

    async def post(self, name: str):
        validate_name(name)
        self.central()
        now = self.json_body().get("now")
        if now is not None and (
            isinstance(now, bool)
            or not isinstance(now, int | float)
            or not math.isfinite(now)
            or now < windows.EARLIEST
        ):
            raise BadRequest(
                f"now must be epoch seconds {windows.now_span_text()}.", '{"now": 1767225600}'
            )
        if now is not None:
            windows.not_after_clock(now, time.time())
        await self.known_model(name, monitored=True)
        self.write_json(await self.agent.monitor_run(name, now))
