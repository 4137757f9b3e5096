"""A model's history: who pushed what and when, the verdict, where the data changed, the stage."""

from __future__ import annotations

import html

from handoff_agent.shell import visible
from handoff_agent.vocabulary import pruned_text, table_time

from .client import connect
from .deploy_view import central_number, quiet_view, serving_line, version_line
from .monitor_view import alert_badge, alert_line, open_alerts
from .refs import checked_name
from .review_view import waiting_at_central, waiting_text
from .widgets.style import STATUS_VERDICT, badge, forward_text, stage_text

ROLES_FIRST = ("X", "y", "sensitive", "reference")
WAITING = "font-size:85%;color:#9a6700"  # what central waits for, under the stage
MUTED = "font-size:85%;color:#57606a"


class History:
    """Versions of one model, newest first, as plain rows (``rows``) or a table."""

    def __init__(
        self,
        name: str,
        versions: list[dict],
        deployment: dict | None = None,
        alerts: list[dict] | None = None,
        reviews: dict[int, dict] | None = None,
        more: bool = False,
        problems: list[str] | None = None,
    ):
        self.name = name
        # what stops stages coming back from central (its refusal of the agent's token)
        self.problems = problems or []
        self.more = more  # older versions exist past the limit
        self.versions = versions  # full version dicts, newest first
        self.deployment = deployment  # central's view, when it could say
        self.alerts = alerts or []  # the model's firing monitor alerts at central
        self.reviews = reviews or {}  # central's review entries, by central's number
        self.roles = self._roles()
        self.rows = self._rows()

    def _roles(self) -> list[str]:
        seen: list[str] = []
        for v in self.versions:
            for role in (v.get("manifest") or {}).get("data") or {}:
                if role not in seen:
                    seen.append(role)
        return sorted(
            seen,
            key=lambda r: (
                r not in ROLES_FIRST,
                ROLES_FIRST.index(r) if r in ROLES_FIRST else 0,
                r,
            ),
        )

    def _rows(self) -> list[dict]:
        rows = []
        older = list(reversed(self.versions))
        previous: dict[str, str | None] = {}
        for i, v in enumerate(older):
            data = (v.get("manifest") or {}).get("data") or {}
            fps = {role: (data.get(role) or {}).get("fingerprint") for role in self.roles}
            changed = [r for r in self.roles if i > 0 and fps[r] != previous.get(r)]
            verdict = v.get("verdict") or {}
            rows.append(
                {
                    "number": v.get("number"),
                    "status": v.get("status"),
                    "verdict": verdict.get("verdict") or STATUS_VERDICT.get(v.get("status") or ""),
                    "reasons": list(verdict.get("reasons") or []),
                    "pushed_by": v.get("pushed_by"),
                    "pushed_at": v.get("pushed_at"),
                    "message": v.get("message") or "",
                    "fingerprints": fps,
                    "data_changed": changed,
                    "stage": stage_text(v),
                    "handoff": "; ".join(
                        forward_text(f)
                        for f in v.get("forwards") or []
                        if f.get("state") != "delivered"
                    ),
                    "waiting": waiting_text(self.reviews.get(central_number(v))),
                    "serving": version_line(self.deployment, central_number(v)),
                    "pruned": pruned_text(v.get("pruned")),
                }
            )
            previous = fps
        return list(reversed(rows))

    def to_dataframe(self):
        import pandas as pd

        flat = []
        for r in self.rows:
            row = {
                k: r[k]
                for k in (
                    "number",
                    "status",
                    "verdict",
                    "pushed_by",
                    "pushed_at",
                    "message",
                    "stage",
                    "handoff",
                    "waiting",
                    "serving",
                    "pruned",
                )
            }
            for role, fp in r["fingerprints"].items():
                row[f"data.{role}"] = (fp or "")[:12]
            row["data_changed"] = ", ".join(r["data_changed"])
            flat.append(row)
        return pd.DataFrame(flat)

    def __len__(self) -> int:
        return len(self.rows)

    def _count(self) -> str:
        n = len(self.rows)
        count = f"{n} version{'s' * (n != 1)}"
        return f"newest {count}; --limit shows more" if self.more else count

    def __repr__(self) -> str:
        lines = [f"History({self.name!r}, {self._count()})"]
        if serving_line(self.deployment):
            lines.append(f"  {serving_line(self.deployment)}")
        if self.alerts:
            lines.append(f"  {alert_line(self.alerts)}")
        lines += [f"  {p}" for p in self.problems]
        for r in self.rows:
            mark = f"  data changed: {', '.join(r['data_changed'])}" if r["data_changed"] else ""
            where = "".join(
                f"  [{r[k]}]" for k in ("handoff", "waiting", "serving", "pruned") if r[k]
            )
            stage = f"  {r['stage']}" if r["stage"] else ""
            lines.append(
                f"  {r['number']:>4}  {(r['verdict'] or r['status'] or ''):<8} "
                f"{(r['pushed_at'] or '')[:19]}  {r['pushed_by'] or ''}  {r['message']}{mark}"
                f"{stage}{where}"
            )
            lines += [f"        {reason}" for reason in r["reasons"]]
        return "\n".join(visible(x) for x in lines)  # messages are what analysts wrote

    def _repr_html_(self) -> str:
        def e(text) -> str:  # control and direction characters shown as escapes, as in text
            return html.escape(visible(text))

        cell = "padding:2px 8px;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:top"
        head = ["version", "verdict", "pushed", "message"] + [f"data: {r}" for r in self.roles]
        head += ["stage", "serving"]
        line = serving_line(self.deployment)
        out = [
            f"<div class='handoff-history'><b>{e(self.name)}</b>: {e(self._count())}"
            + (f" {alert_badge(self.name, self.alerts)}" if self.alerts else "")
            + (f"<div class='handoff-serving'>{e(line)}</div>" if line else "")
            + "".join(f"<div style='{WAITING}'>{e(p)}</div>" for p in self.problems)
            + "<table style='border-collapse:collapse;font-size:90%'><tr>"
        ]
        out += [f"<th style='{cell}'>{e(h)}</th>" for h in head] + ["</tr>"]
        for r in self.rows:
            reasons = "<br>".join(e(x) for x in r["reasons"])
            tds = [
                f"<b>{r['number']}</b>",
                badge(r["verdict"], r["verdict"] or r["status"])
                + (f"<div style='font-size:85%;color:#57606a'>{reasons}</div>" if reasons else ""),
                f"{e(r['pushed_by'] or '')}<br><span style='color:#57606a'>"
                f"{e(table_time(r['pushed_at']))}</span>",
                e(r["message"]),
            ]
            for role in self.roles:
                fp = r["fingerprints"].get(role)
                if not fp:
                    tds.append("&ndash;")
                    continue
                changed = role in r["data_changed"]
                style = "color:#cf222e;font-weight:bold" if changed else "color:#57606a"
                tds.append(
                    f"<code style='{style}' title='{e(fp)}'>{e(fp[:10])}</code>"
                    + (" <span style='color:#cf222e'>● changed</span>" if changed else "")
                )
            waits = "".join(
                f"<div style='{WAITING}'>{e(r[k])}</div>" for k in ("handoff", "waiting") if r[k]
            )
            gone = r["pruned"] and f"<div style='{MUTED}'>{e(r['pruned'])}</div>"
            tds.append(e(r["stage"]) + waits + gone)
            tds.append(e(r["serving"]))
            out.append("<tr>" + "".join(f"<td style='{cell}'>{t}</td>" for t in tds) + "</tr>")
        out.append("</table></div>")
        return "".join(out)


def history(name: str, limit: int = 50, client=None) -> History:
    """The versions of ``name``, newest first, with verdicts, data fingerprints, stage and the
    sign-offs central waits for, and a badge when the model has firing monitor alerts there."""
    checked_name(name)
    client = client or connect(start=False)
    limit = min(int(limit), 999)  # one more is asked for, to know if there are more
    listing = client.get(f"/api/v1/models/{name}/versions?limit={limit + 1}")["versions"]
    more, listing = len(listing) > limit, listing[:limit]
    full = [client.get(f"/api/v1/models/{name}/versions/{v['number']}") for v in listing]
    at_central = any(v.get("stage") for v in full)
    deployment = quiet_view(name, client) if at_central else None
    reviews = waiting_at_central(name, client) if at_central else {}
    alerts = open_alerts(name, client) if full else []
    outbox = client.side_get("/api/v1/outbox") if any(v.get("forwards") for v in full) else None
    problems = (outbox or {}).get("problems") or []
    return History(name, full, deployment, alerts, reviews, more, problems)
