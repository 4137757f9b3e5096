"""``%mlops monitor NAME``: a model's monitoring at central, in the notebook.

Time-series charts of traffic and of each alert kind (performance with its bootstrap CI, the
label-free estimate, input and prediction drift, error rate, latency) against the threshold
central judged each window on, the crossings marked, and the alerts with a badge for those
firing. The local agent relays
central's answers, so the notebook needs no central token. matplotlib is imported only when
the charts are drawn (never at ``%load_ext``); no pyplot, so the user's backend is left alone.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime

FIRING, CLEARED = "#cf222e", "#1a7f37"


def open_alerts(name: str, client) -> list[dict]:
    """The model's firing alerts at central, for the push and history views' badge: one GET
    (the local agent relays it); [] when central cannot say (none configured, or down)."""
    found = client.side_get(f"/api/v1/models/{name}/alerts?state=firing")
    return list(found["alerts"]) if found else []


def alert_line(alerts: list[dict]) -> str:
    """'1 alert firing: input drift (daily)', or '' without one."""
    from handoff_agent.monitor_policy import ALERT_KINDS

    if not alerts:
        return ""
    kinds = ", ".join(
        f"{ALERT_KINDS.get(a.get('kind'), a.get('kind'))} ({a.get('window')})" for a in alerts
    )
    return f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''} firing: {kinds}"


def alert_badge(name: str, alerts: list[dict]) -> str:
    """A red badge naming the firing alerts (their messages on hover), or '' without one."""
    if not alerts:
        return ""
    tip = "\n".join(a.get("message") or "" for a in alerts) + f"\n%mlops monitor {name}"
    return (
        f'<span class="handoff-alerts" title="{html.escape(tip)}" style="background:{FIRING};'
        f'color:white;border-radius:8px;padding:1px 8px;font-size:90%">'
        f"{html.escape(alert_line(alerts))}</span>"
    )


class MonitorView:
    """The series and alerts of one model; ``_repr_html_`` draws them."""

    def __init__(self, name: str, series: dict, alerts: dict, window: str = "daily"):
        self.name, self.series, self.window = name, series, window
        self.alerts = alerts.get("alerts", [])
        self.windows = [w for w in series.get("windows", []) if w["kind"] == window]

    @property
    def firing(self) -> list[dict]:
        return [a for a in self.alerts if a["state"] == "firing"]

    def __repr__(self) -> str:
        return (
            f"MonitorView({self.name!r}, {len(self.windows)} {self.window} windows, "
            f"{len(self.firing)} firing alerts)"
            + (f"\n{why}" if (why := (self.series.get("traffic") or {}).get("why_none")) else "")
        )

    def badge(self) -> str:
        n = len(self.firing)
        colour, text = (FIRING, f"{n} firing") if n else (CLEARED, "no alert")
        return (
            f'<span style="background:{colour};color:white;border-radius:8px;'
            f'padding:1px 8px;font-size:90%">{text}</span>'
        )

    def _points(self, path: tuple[str, ...]) -> tuple[list, list]:
        xs, ys = [], []
        for w in self.windows:
            value = w.get("metrics") or {}
            for k in path:
                value = value.get(k) if isinstance(value, dict) else None
            if value is not None:
                xs.append(datetime.fromtimestamp(w["start"], UTC))
                ys.append(value)
        return xs, ys

    def _readings(self) -> dict[str, list[tuple[datetime, dict]]]:
        """Per alert kind, (window start, reading): the value, threshold and crossing that
        central judged the alerts on (``readings`` of each window), never a copy here."""
        out: dict[str, list] = {}
        for w in self.windows:
            when = datetime.fromtimestamp(w["start"], UTC)
            for r in w.get("readings") or []:
                out.setdefault(r["kind"], []).append((when, r))
        return out

    def charts(self) -> list[tuple[str, str]]:
        """(title, base64 PNG) of each chart with data: traffic, then each alert kind's
        values against its threshold, the windows that crossed it marked."""
        from matplotlib.figure import Figure

        from handoff_agent.monitor_policy import ALERT_KINDS, SEVERITY

        readings = self._readings()
        out = []
        xs, ys = self._points(("traffic", "requests"))
        if xs:
            out.append(self._chart(Figure, "traffic (requests)", xs, ys))
        for kind in sorted(readings, key=lambda k: SEVERITY.index(k) if k in SEVERITY else 99):
            rows = readings[kind]
            title = f"{ALERT_KINDS.get(kind, kind)}: alert {rows[-1][1]['worse']} threshold"
            out.append(self._chart(Figure, title, [t for t, _ in rows], rows=rows, kind=kind))
        return out

    def _chart(self, Figure, title, xs, ys=None, rows=None, kind=None) -> tuple[str, str]:
        fig = Figure(figsize=(5.0, 2.4))
        ax = fig.add_subplot()
        if rows is not None:
            ys = [r["value"] for _, r in rows]
            ax.step(xs, [r["threshold"] for _, r in rows], where="mid", color=FIRING, lw=1)
            crossed = [(t, r["value"]) for t, r in rows if r["crossed"]]
            if crossed:
                ax.plot(*zip(*crossed, strict=True), "v", color=FIRING, label="crossed")
        ax.plot(xs, ys, marker=".", color="#0969da")
        if kind == "performance":
            cx, ci = self._points(("performance", "ci"))
            if cx:
                ax.fill_between(cx, [c[0] for c in ci], [c[1] for c in ci], alpha=0.2)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        fig.autofmt_xdate()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
        return title, base64.b64encode(buf.getvalue()).decode()

    def _repr_html_(self) -> str:
        e = html.escape
        imgs = "".join(
            f'<img alt="{e(t)}" src="data:image/png;base64,{png}" style="max-width:48%">'
            for t, png in self.charts()
        )
        rows = "".join(
            f"<tr><td>{e(a['kind'])}</td><td style='color:"
            f"{FIRING if a['state'] == 'firing' else CLEARED}'>{e(a['state'])}</td>"
            f"<td>{e(a['window'])}</td><td>{e(a.get('message') or '')}</td>"
            f"<td>{e(a.get('outcome') or '')}</td></tr>"
            for a in self.alerts[:20]
        )
        table = (
            "<table><tr><th>alert</th><th>state</th><th>window</th><th>what</th><th>action</th>"
            f"</tr>{rows}</table>"
            if rows
            else "<p>No alert so far.</p>"
        )
        why = (self.series.get("traffic") or {}).get("why_none")
        why = f"<p>{e(why)}</p>" if why else ""
        return (
            f"<div><p><b>Monitoring of {e(self.name)}</b> at central {self.badge()} "
            f"({len(self.windows)} {e(self.window)} windows)</p>{why}{imgs}{table}</div>"
        )


def monitor(name: str, window: str = "daily") -> MonitorView:
    """The monitoring of ``name`` at central: charts against thresholds, and the alerts."""
    from .client import connect
    from .refs import checked_name
    from .serving_calls import model_read

    name = checked_name(name)
    client = connect(start=False)
    series = model_read(name, f"monitor?window={window}", client)
    alerts = model_read(name, "alerts", client)
    return MonitorView(name, series, alerts, window)
