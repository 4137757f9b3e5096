"""The live deployment view: a traffic bar, a row per slot, the alarms.

State lives in plain traits (``slots``, ``alarms``, ``serving``, ``agent_lost``) so tests
can assert it without a browser. A daemon thread re-reads the deployment every ``interval``
seconds, and at once when the model's deployment events say a stage, the traffic or a
guardrail changed: ``/api/v1/models/NAME/deployment/events``, which a local agent relays
from its central (the events happen there).
"""

from __future__ import annotations

import threading
from urllib.parse import quote

import ipywidgets as w
from traitlets import Bool, Float, List, Unicode

from ..deploy_view import alarms_of, deployment_html, serving_line
from .style import e


class DeploymentWidget(w.VBox):
    model_name = Unicode()
    slots = List(help="the slots as central describes them: slot, version, traffic, stats…")
    alarms = List(help="every alarm named on the model or a slot, one line each")
    serving = Unicode("", help="e.g. 'serving: production v1 90% / canary v2 10%'")
    agent_lost = Bool(False, help="True while the agent or central is not answering")
    interval = Float(2.0, help="seconds between two reads")

    def __init__(self, deployment, client=None, interval: float = 2.0, **kwargs):
        from ..client import connect

        self._client = client or deployment._client or connect(start=False)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._follower = None
        self.view_html = w.HTML()
        self.notice = w.HTML()
        super().__init__(children=[self.view_html, self.notice], **kwargs)
        self.add_class("handoff-deployments")
        self.model_name, self.interval = deployment.name, interval
        self.apply(deployment.view)
        if interval > 0:
            self.follow()

    def apply(self, view: dict) -> None:
        self.slots = list(view.get("slots") or [])
        self.alarms = alarms_of(view)
        self.serving = serving_line(view)
        self.view_html.value = deployment_html(self.model_name, view)

    def refresh(self) -> None:
        try:
            view = self._client.get(f"/api/v1/models/{self.model_name}/deployment")
        except Exception as exc:  # down for now: say so, and keep trying
            self.agent_lost = True
            self.notice.value = (
                "<div style='border-left:4px solid #cf222e;padding:4px 8px'>"
                f"Not answering: {e(str(exc).splitlines()[0])}. This view retries.</div>"
            )
            return
        self.agent_lost = False
        self.notice.value = ""
        self.apply(view)

    def follow(self) -> None:
        from ..sse import EventFollower

        def on_event(kind, data):
            # "central": the relay to central opened again; what it missed, a read shows
            if kind in ("stage", "deployment", "guardrail", "validation", "alert", "central"):
                self._wake.set()
            return self._stop.is_set()

        try:
            self._follower = EventFollower(
                self._client,
                self.model_name,
                None,
                on_event=on_event,
                on_open=lambda: False,
                on_lost=lambda exc: None,
                reconnect=lambda: self._client,
                path=f"/api/v1/models/{quote(self.model_name, safe='')}/deployment/events",
            ).start()
        except Exception:  # polling alone still keeps the view live
            self._follower = None
        threading.Thread(target=self._poll, name="handoff-deployments", daemon=True).start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if not self._stop.is_set():
                self.refresh()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._follower is not None:
            self._follower.stop()

    def __repr__(self) -> str:
        return f"DeploymentWidget({self.model_name!r}, {self.serving or 'not serving'})"
