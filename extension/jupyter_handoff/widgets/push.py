"""The live push view: a row per check, a progress bar, the verdict and the report.

State lives in plain traits (``checks``, ``status``, ``provisional``, ``verdict``, ``reasons``,
``report_ready``, ``agent_lost``) so tests can assert it without a browser. A daemon thread
follows the agent's event stream; the kernel stays free to run other cells.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

import ipywidgets as w
from traitlets import Bool, Dict, Integer, List, Unicode

from handoff_agent.vocabulary import DEPLOYED_STAGES

from ..client import START_HINT
from ..monitor_view import alert_badge, open_alerts
from ..refs import trust_wait
from .style import (
    FINAL,
    PROVISIONAL_FIELD,
    PROVISIONAL_WORDS,
    STATUS_VERDICT,
    VERDICT_WORDS,
    badge,
    e,
    forward_text,
    icon,
    one_line,
    seconds,
    stage_text,
)

TICK = 1.0


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class PushWidget(w.VBox):
    """Follows one version from push to verdict and report."""

    model_name = Unicode()
    number = Integer(0)
    status = Unicode("checking", help="the version's status: checking, passed, warned, failed")
    provisional = Dict(
        help="the verdict so far ({verdict, reasons, pending}) once the first checks are in, "
        "until the final verdict replaces it"
    )
    verdict = Unicode("", help="pass, warn or fail once every check has finished")
    reasons = List(help="the verdict's reasons")
    checks = Dict(help="check name -> {status, message, duration, started}")
    report_ready = Bool(False)
    report_url = Unicode("", help="the report's address on the agent's API")
    agent_lost = Bool(False, help="True while the agent is not answering")
    done = Bool(False, help="True once the verdict and the report are in")
    handoff = Unicode("", help="where the version went: each destination's state, the stage")
    serving = Unicode("", help="where the model serves, once the version is deployed at central")
    waiting = Unicode("", help="the sign-offs central waits for before the version moves on")
    alerts = List(help="the model's firing monitor alerts at central (the header's badge)")

    def __init__(self, version, client=None, follow: bool = True, **kwargs):
        from ..client import connect

        self._client = client or version._client or connect(start=False)
        self._lock = threading.RLock()
        self._order: list[str] = []
        self._forwards: dict = {}
        self._stage = ""
        self._follower = None
        self.header = w.HTML()
        self.progress = w.IntProgress(
            value=0, min=0, max=1, bar_style="info", layout=w.Layout(width="320px")
        )
        self.progress_label = w.HTML()
        self.rows: dict[str, w.HTML] = {}
        self.rows_box = w.VBox()
        self.verdict_html = w.HTML()
        self.handoff_html = w.HTML()
        self.notice = w.HTML()
        self.report_button = w.Button(
            description="Open report",
            icon="file-text",
            disabled=True,
            tooltip="Show the report inline, sandboxed",
        )
        self.report_button.on_click(lambda _b: self.open_report())
        self.report_hint = w.HTML()
        self.report_view = w.HTML()
        super().__init__(
            children=[
                self.header,
                w.HBox([self.progress, self.progress_label]),
                self.rows_box,
                self.verdict_html,
                self.handoff_html,
                self.notice,
                w.HBox([self.report_button, self.report_hint]),
                self.report_view,
            ],
            **kwargs,
        )
        self.model_name, self.number = version.name, int(version.number)
        self.report_url = (
            f"{self._client.url}/api/v1/models/{self.model_name}/versions/{self.number}/report"
        )
        self.add_class("handoff-push")
        self.apply_state(version._data)
        self.read_alerts()
        if follow and not self.done:
            self.follow()

    # -- state --------------------------------------------------------------------------

    def apply_state(self, data: dict) -> None:
        """Take the version as the agent knows it (GET .../versions/N)."""
        with self._lock:
            checks = {}
            for c in data.get("checks") or []:
                checks[c["name"]] = {
                    "status": c.get("status") or "queued",
                    "message": c.get("message") or "",
                    "duration": c.get("duration"),
                    "started": _ts(c.get("started")),
                }
            if checks:
                self._order = list(checks)
                self.checks = checks
            self.status = data.get("status") or self.status
            verdict = data.get("verdict") or {}
            self.verdict = verdict.get("verdict") or STATUS_VERDICT.get(self.status, "")
            self.reasons = list(verdict.get("reasons") or [])
            self.provisional = {} if self.verdict else dict(data.get(PROVISIONAL_FIELD) or {})
            self.report_ready = bool(data.get("reports"))
            self._forwards = {f["destination"]: f for f in data.get("forwards") or []}
            self._stage = data.get("stage") or ""
            self._stage_said = stage_text(data)
            self._needs_trust = data.get("needs_trust") or []
            self.handoff = self._handoff_text()
            self.done = self._finished()
            self.render()
        self.read_serving()
        self.read_waiting()

    def read_waiting(self) -> None:
        """The sign-offs central waits for (and what would refuse one now), read when the
        widget is built and when the version's stage changes."""
        from ..review_view import waiting_for

        state = {"stage": self._stage, "forwards": list(self._forwards.values())}
        text = waiting_for(self.model_name, state, self._client)
        if text != self.waiting:
            self.waiting = text
            self.render()

    def read_serving(self) -> None:
        """Where the model serves, once this version reached a serving stage at central."""
        from ..deploy_view import central_number, quiet_view, serving_line, version_line

        if self._stage not in DEPLOYED_STAGES:
            return
        view = quiet_view(self.model_name, self._client)
        number = central_number({"number": self.number, "forwards": list(self._forwards.values())})
        here = version_line(view, number)
        line = serving_line(view)
        text = "; ".join(x for x in (f"this version: {here}" if here else "", line) if x)
        if text != self.serving:
            self.serving = text
            self.render()

    def read_alerts(self) -> None:
        """The model's firing alerts: read when the widget is built and when the version's
        stage changes, never polled."""
        alerts = open_alerts(self.model_name, self._client)
        if alerts != self.alerts:
            self.alerts = alerts
            self.render()

    def apply_event(self, kind: str, data: dict) -> bool:
        """One event from the stream. Returns True when there is nothing more to follow."""
        if data.get("version") != self.number:
            return False
        with self._lock:
            if kind == "version" and data.get("checks") and not self.checks:
                self._order = list(data["checks"])
                self.checks = {n: {"status": "queued", "message": ""} for n in self._order}
            elif kind == "check":
                name = data.get("check")
                row = dict(self.checks.get(name, {}))
                row["status"] = data.get("status") or "queued"
                if row["status"] == "running":
                    row["started"] = time.time()
                else:
                    row["message"] = data.get("message") or ""
                    row["duration"] = data.get("duration")
                if name not in self._order:
                    self._order.append(name)
                self.checks = {**self.checks, name: row}
            elif kind == PROVISIONAL_FIELD and not self.verdict:
                keys = ("verdict", "reasons", "pending")
                self.provisional = {k: data.get(k) for k in keys}
            elif kind == "verdict":
                self.status = data.get("status") or self.status
                self.verdict = data.get("verdict") or ""
                self.reasons = list(data.get("reasons") or [])
                self.provisional = {}
            elif kind == "report":
                self.report_ready = True
            elif kind == "forward":
                dest = data.get("destination")
                row = {
                    **self._forwards.get(dest, {}),
                    "destination": dest,
                    "state": data.get("state"),
                    "last_error": data.get("error"),
                }
                if data.get("remote"):  # a delivery's answer: the number central gave it
                    row["remote"] = data["remote"]
                self._forwards = {**self._forwards, dest: row}
            elif kind == "stage":
                self._stage = data.get("stage") or self._stage
                self._stage_said = stage_text(data)
                self._needs_trust = data.get("needs_trust") or []
            self.handoff = self._handoff_text()
            self.done = self._finished()
            self.render()
        if kind in ("verdict", "report", "stage"):
            self.refresh()  # results, durations, reports and a stage's reason as committed
        elif kind == "stage":
            self.read_serving()
            self.read_waiting()
            self.read_alerts()
        return self.done

    def _handoff_text(self) -> str:
        parts = [
            forward_text({**f, "destination": dest})
            for dest, f in getattr(self, "_forwards", {}).items()
        ]
        if getattr(self, "_stage", ""):
            parts.append(f"stage {getattr(self, '_stage_said', '') or self._stage}")
        waiting = trust_wait(
            {"stage": getattr(self, "_stage", ""), "needs_trust": getattr(self, "_needs_trust", [])}
        )
        if waiting:
            parts.append(waiting)
        return "; ".join(parts)

    def _finished(self) -> bool:
        if self.status in ("pushed",) and not self.checks:
            return True
        # Keep following a hand-off until each delivery is settled, or waiting on a retry
        # (e.g. central is down): then the row says why, and the stream is let go.
        settled = all(
            f.get("state") in ("delivered", "dead") or f.get("last_error")
            for f in getattr(self, "_forwards", {}).values()
        )
        return bool(self.verdict) and self.report_ready and settled

    def refresh(self) -> None:
        data = self._client.get(f"/api/v1/models/{self.model_name}/versions/{self.number}")
        self.agent_lost = False
        self.apply_state(data)

    # -- following ----------------------------------------------------------------------

    def follow(self) -> None:
        from ..sse import EventFollower

        def on_open():
            self.notice.value = ""
            self.refresh()
            return self.done

        self._follower = EventFollower(
            self._client,
            self.model_name,
            self.number,
            on_event=self.apply_event,
            on_open=on_open,
            on_lost=self._lost,
            reconnect=self._reconnect,
        ).start()
        threading.Thread(target=self._tick, name="handoff-tick", daemon=True).start()

    @property
    def following(self) -> bool:
        """True when built before the version settled: it follows the event stream."""
        return self._follower is not None

    def stop(self) -> None:
        if self._follower is not None:
            self._follower.stop()

    def _tick(self) -> None:
        while not self.done and not (self._follower and self._follower.stopped):
            time.sleep(TICK)
            if any(c.get("status") == "running" for c in self.checks.values()):
                self.render()

    def _lost(self, exc: BaseException) -> None:
        self.agent_lost = True
        self.notice.value = (
            "<div style='border-left:4px solid #cf222e;padding:4px 8px;margin:4px 0'>"
            f"<b>The agent stopped answering</b> ({e(type(exc).__name__)}: {e(str(exc))}). "
            f"{e(START_HINT)} Checks that were running start again, and this view picks up "
            "where it left off once the agent is back.</div>"
        )

    def _reconnect(self):
        from ..client import connect

        try:
            client = connect(start=False, announce=lambda *_: None)
            client.timeout = 5
            client.get("/api/v1/health")
        except Exception:  # not back yet
            return None
        self._client = client  # it may listen on another port now
        self.report_url = (
            f"{client.url}/api/v1/models/{self.model_name}/versions/{self.number}/report"
        )
        return client

    # -- rendering ----------------------------------------------------------------------

    def render(self) -> None:
        with self._lock:
            total = len(self.checks)
            final = sum(1 for c in self.checks.values() if c.get("status") in FINAL)
            self.header.value = (
                f"<b>{e(self.model_name)}</b> version <b>{self.number}</b> {self._badge()}"
                + (f" {alert_badge(self.model_name, self.alerts)}" if self.alerts else "")
            )
            self.progress.max = max(total, 1)
            self.progress.value = final if total else (1 if self.done else 0)
            self.progress.bar_style = {"pass": "success", "warn": "warning", "fail": "danger"}.get(
                self.verdict, "info"
            )
            self.progress_label.value = f"&nbsp;{final} of {total} checks" if total else ""
            for name in self._order:
                row = self.rows.get(name)
                if row is None:
                    row = self.rows[name] = w.HTML()
                row.value = self._row_html(name, self.checks.get(name, {}))
            if len(self.rows_box.children) != len(self._order):
                self.rows_box.children = [self.rows[n] for n in self._order]
            self.verdict_html.value = self._verdict_html()
            lines = (
                ("handoff-forwards", f"Hand-off: {self.handoff}" if self.handoff else ""),
                ("handoff-waiting", self.waiting),
                ("handoff-serving", self.serving),
            )
            self.handoff_html.value = "".join(
                f"<div class='{cls}'>{e(text)}</div>" for cls, text in lines if text
            )
            self.report_button.disabled = not self.report_ready
            self.report_hint.value = (
                f"&nbsp;or <code>jupyter handoff report {e(self.model_name)}:{self.number}"
                " --open</code>"
                if self.report_ready
                else "&nbsp;<i>the report is written when every check has finished</i>"
            )

    def _badge(self) -> str:
        guess = (self.provisional or {}).get("verdict")
        if not self.verdict and guess:
            return badge(guess, PROVISIONAL_WORDS.get(guess, guess), provisional=True)
        return badge(self.verdict or None, self._status_text())

    def _status_text(self) -> str:
        if self.verdict:
            return VERDICT_WORDS.get(self.verdict, self.verdict)
        return self.status or "checking"

    def _row_html(self, name: str, c: dict) -> str:
        status = c.get("status", "queued")
        if status == "running" and c.get("started"):
            elapsed = seconds(max(0.0, time.time() - c["started"])) + "…"
        else:
            elapsed = seconds(c.get("duration"))
        message = one_line(c.get("message")) or ("running…" if status == "running" else "")
        return (
            "<div style='display:flex;gap:8px;font-family:var(--jp-code-font-family,monospace);"
            "font-size:90%;line-height:1.6'>"
            f"<span style='width:1.2em'>{icon(status)}</span>"
            f"<span style='width:9em'>{e(name)}</span>"
            f"<span style='width:5.5em;text-align:right;color:#57606a'>{e(elapsed)}</span>"
            f"<span style='flex:1' title='{e(c.get('message') or '')}'>{e(message)}</span></div>"
        )

    def _verdict_html(self) -> str:
        guess = (self.provisional or {}).get("verdict")
        if not self.verdict and guess:
            reasons = "".join(f"<li>{e(r)}</li>" for r in self.provisional.get("reasons") or [])
            pending = ", ".join(self.provisional.get("pending") or [])
            return (
                f"<div style='margin-top:4px'>Provisional verdict: "
                f"{badge(guess, provisional=True)} <i>until {e(pending)} "
                "finish; the final verdict replaces it</i>"
                + (f"<ul style='margin:2px 0'>{reasons}</ul>" if reasons else "")
                + "</div>"
            )
        if not self.verdict:
            return ""
        reasons = "".join(f"<li>{e(r)}</li>" for r in self.reasons)
        return (
            f"<div style='margin-top:4px'>Verdict: {badge(self.verdict)}"
            + (f"<ul style='margin:2px 0'>{reasons}</ul>" if reasons else "")
            + "</div>"
        )

    def open_report(self) -> None:
        """Show the report inline, in a sandboxed iframe (no script runs)."""
        from ..report_doc import Report

        raw = self._client.get_raw(
            f"/api/v1/models/{self.model_name}/versions/{self.number}/report?format=html"
        )
        self.report_view.value = Report(self.model_name, self.number, "html", raw)._repr_html_()

    def __repr__(self) -> str:
        return (
            f"PushWidget({self.model_name!r}, {self.number}, status={self.status!r}, "
            f"checks={len(self.checks)}"
            + (f", alerts={len(self.alerts)}" if self.alerts else "")
            + ")"
        )
