"""How a deployment reads, as text and HTML: the serving line, a slot table, the alarms.
Pure functions over central's ``GET /api/v1/models/{name}/deployment`` answer, read
generically (the slot fields central sends are shown as they come), shared by
``%mlops deployments``, its widget, ``%mlops history`` and the push widget."""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Callable, Iterator

# Shown first, in this order; any other field central sends follows.
FIRST = ("slot", "version", "traffic", "requests", "error_rate", "p50_ms", "p99_ms")
# Bookkeeping a reader does not need in the table.
HIDDEN = frozenset({"since", "by", "worker_pids", "errors"})
# Top-level keys that are not per-slot facts (guardrails and validations: lines of their own).
FRAME = frozenset({"model", "slots", "serving_url", "policy", "guardrails", "validations"})
ALARM_KEYS = ("alarms", "alarm")


def fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "traffic" and isinstance(value, (int, float)):
        return f"{value:g}%"
    if key == "error_rate" and isinstance(value, (int, float)):
        return f"{100 * value:.2f}%"
    if key.endswith("_ms") and isinstance(value, (int, float)):
        return f"{value:.2f} ms"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(k, v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(key, v) for v in value)
    return str(value)


def _alarm_text(alarm) -> str:
    if isinstance(alarm, dict):
        return str(alarm.get("reason") or alarm.get("message") or alarm.get("metric") or alarm)
    return str(alarm)


def alarms_of(view: dict) -> list[str]:
    """Every alarm the view names, on the model or on a slot, as one line each."""
    out = []
    for holder in [view, *(view.get("slots") or [])]:
        for key in ALARM_KEYS:
            found = holder.get(key) if isinstance(holder, dict) else None
            if not found:
                continue
            for alarm in found if isinstance(found, list) else [found]:
                prefix = f"{holder['slot']}: " if "slot" in holder and holder is not view else ""
                out.append(prefix + _alarm_text(alarm))
    return out


def serving_line(view: dict | None) -> str:
    """``serving: production v1 90% / canary v2 10%``; empty when nothing takes traffic."""
    if not view:
        return ""
    serving = [s for s in view.get("slots") or [] if (s.get("traffic") or 0) > 0]
    serving.sort(key=lambda s: -s["traffic"])  # the larger share first
    parts = [
        f"{s.get('slot')} v{s.get('version')} {fmt('traffic', s.get('traffic'))}" for s in serving
    ]
    return "serving: " + " / ".join(parts) if parts else ""


def central_number(version: dict) -> int | None:
    """The number central gave a local version (its delivery's answer); None before central
    answered. Never the local number: central numbers every sender's versions of a name."""
    if version.get("central_version") is not None:
        return int(version["central_version"])
    for f in version.get("forwards") or []:
        remote = f.get("remote") or {}
        if f.get("destination") == "central" and remote.get("version") is not None:
            return int(remote["version"])
    return None


def version_line(view: dict | None, number: int | None) -> str:
    """Where one version serves: ``canary 10%`` or ``test (by version only)``."""
    out = []
    for s in (view or {}).get("slots") or []:
        if s.get("version") == number:
            share = s.get("traffic") or 0
            out.append(f"{s.get('slot')} {fmt('traffic', share)}" if share else s.get("slot"))
    return ", ".join(str(x) for x in out)


def columns_of(slots: list[dict]) -> list[str]:
    cols = [c for c in FIRST if any(c in s for s in slots)]
    for s in slots:
        for k in s:
            if k not in cols and k not in HIDDEN and k not in ALARM_KEYS:
                cols.append(k)
    return cols


def guardrail_lines(view: dict) -> list[str]:
    """What the guardrails decided, a line per slot they judge: ``canary baking at 30%: Baking
    at 30%: 20 more requests before a decision.``"""
    out = []
    for slot, judged in (view.get("guardrails") or {}).items():
        if not isinstance(judged, dict):
            continue  # the tick, or a slot with nothing to judge
        head = slot + (f" {judged['state']}" if judged.get("state") else "")
        if isinstance(judged.get("percent"), (int, float)):
            head += f" at {fmt('traffic', judged['percent'])}"
        out.append(f"{head}: {judged.get('reason') or fmt(slot, judged)}")
    return out


def validation_lines(view: dict) -> list[str]:
    """What validating each served version found, a line each: ``v2 done: onnx backend; ONNX
    parity: max abs diff 9.1e-08, labels agree 100% on 400 rows; load test pass``."""
    out = []
    for number, v in (view.get("validations") or {}).items():
        if not isinstance(v, dict):
            continue
        parts = [f"{v['backend']} backend"] if v.get("backend") else []
        parity = v.get("parity") or {}
        if parity.get("converted") and parity.get("max_abs_diff") is not None:
            agree = parity.get("label_agreement")
            parts.append(
                f"ONNX parity: max abs diff {parity['max_abs_diff']:.2g}"
                + (f", labels agree {100 * agree:.0f}%" if agree is not None else "")
                + (f" on {parity['rows']} rows" if parity.get("rows") else "")
            )
        elif parity.get("reason"):
            parts.append(f"no ONNX: {parity['reason']}")
        loadtest = v.get("loadtest") or {}
        if loadtest.get("verdict"):
            reasons = "; ".join(loadtest.get("reasons") or [])
            parts.append(f"load test {loadtest['verdict']}" + (f": {reasons}" if reasons else ""))
        if v.get("reason"):
            parts.append(str(v["reason"]))
        out.append(f"v{number} {v.get('state') or ''}: " + "; ".join(parts))
    return out


def extras(view: dict) -> dict:
    """Model-level facts beyond the slots (what the server adds later shows up here)."""
    return {k: v for k, v in view.items() if k not in FRAME and k not in ALARM_KEYS and v}


def deployment_html(name: str, view: dict) -> str:
    e = html.escape
    slots = list(view.get("slots") or [])
    cell = "padding:2px 8px;border-bottom:1px solid #d0d7de;text-align:left"
    out = [f"<div class='handoff-deployment'><b>{e(name)}</b> "]
    if not slots:
        out.append("<i>no version serves</i></div>")
        return "".join(out)
    out.append(f"<span>{e(serving_line(view))}</span>{traffic_bar(slots)}")
    cols = columns_of(slots)
    out.append("<table style='border-collapse:collapse;font-size:90%'><tr>")
    out += [f"<th style='{cell}'>{e(c.replace('_', ' '))}</th>" for c in cols] + ["</tr>"]
    for s in slots:
        out.append("<tr>" + "".join(f"<td style='{cell}'>{e(fmt(c, s.get(c)))}</td>" for c in cols))
        out.append("</tr>")
    out.append("</table>")
    out += [f"<div>guardrails: {e(g)}</div>" for g in guardrail_lines(view)]
    out += [f"<div>validation: {e(v)}</div>" for v in validation_lines(view)]
    out += [f"<div>{e(k)}: {e(fmt(k, v))}</div>" for k, v in extras(view).items()]
    out += [
        f"<div class='handoff-alarm' style='color:#cf222e'><b>alarm</b> {e(a)}</div>"
        for a in alarms_of(view)
    ]
    out.append("</div>")
    return "".join(out)


COLOURS = {"production": "#1a7f37", "canary": "#9a6700"}


def traffic_bar(slots: list[dict]) -> str:
    parts = [
        f"<div title='{html.escape(str(s.get('slot')))} {s.get('traffic'):g}%' style='width:"
        f"{s.get('traffic')}%;background:{COLOURS.get(s.get('slot'), '#57606a')}'></div>"
        for s in slots
        if isinstance(s.get("traffic"), (int, float)) and s.get("traffic") > 0
    ]
    return (
        "<div style='display:flex;height:8px;width:320px;background:#eaeef2;margin:4px 0'>"
        + "".join(parts)
        + "</div>"
    )


def model_names(get: Callable[[str], dict]) -> Iterator[str]:
    """Every model's name, through ``get(path)``: the listing a page at a time."""
    page: dict = {"next": None}
    while "next" in page:
        after = page["next"] and "?" + urllib.parse.urlencode({"after": page["next"]})
        page = get("/api/v1/models" + (after or ""))
        yield from (m["name"] for m in page["models"])


def quiet_view(name: str, client) -> dict | None:
    """The deployment for a side line (history, push widget); None when central cannot say."""
    return client.side_get(f"/api/v1/models/{name}/deployment")
