"""HTML for a Comparison's sections. Plain strings: the widget and the static fallback share it."""

from __future__ import annotations

from .style import BETTER, WORSE, badge, e, icon

TABLE = "border-collapse:collapse;font-size:90%;margin:4px 0"
CELL = "padding:2px 8px;border-bottom:1px solid #d0d7de;text-align:right"
HEAD = "padding:2px 8px;border-bottom:2px solid #8c959f;text-align:right"
LEFT = ";text-align:left"


def fmt(x) -> str:
    """A metric, CI bound or delta as table text; anything not a number (a plugin check may
    report one) escaped like every other string here."""
    if x is None:
        return ""
    if isinstance(x, float):
        if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
            return f"{x:.3g}"
        return f"{x:.3f}"
    return e(str(x))


def header(c, lab: str) -> str:
    marks = []
    if lab in c.champions:
        marks.append("<span title='champion: the best version that passed'>★ champion</span>")
    if lab == c.baseline:
        marks.append("<i>baseline</i>")
    v = c.versions[c.labels.index(lab)]
    status = v.get("status") or ""
    extra = f"<br><span style='font-weight:normal;font-size:85%'>{' · '.join(marks)}</span>"
    checking = " <i>(checking…)</i>" if status in ("checking", "pushed") and v.get("checks") else ""
    return f"<th style='{HEAD}'>{e(lab)}{checking}{extra if marks else ''}</th>"


def metrics_table(c) -> str:
    if c.task_message:
        return f"<p style='color:{WORSE}'>{e(c.task_message)}</p>"
    rows = c.metrics()
    if not rows:
        return "<p><i>No metrics stored yet.</i></p>"
    head = f"<tr><th style='{HEAD}{LEFT}'>metric</th>" + "".join(header(c, lab) for lab in c.labels)
    body = []
    for r in rows:
        name = f"<b>{e(r['metric'])}</b>" if r["primary"] else e(r["metric"])
        hint = {True: " ↑", False: " ↓"}.get(r["higher_is_better"], "")
        cells = [f"<td style='{CELL}{LEFT}'>{name}<span style='color:#8c959f'>{hint}</span></td>"]
        for lab in c.labels:
            if lab not in r["values"]:
                cells.append(f"<td style='{CELL}'>&ndash;</td>")
                continue
            text = fmt(r["values"][lab])
            ci = r["ci"].get(lab)
            if ci and len(ci) == 2:
                ci_text = f"[{fmt(ci[0])}, {fmt(ci[1])}]"
                text += f" <span style='color:#57606a;font-size:85%'>{ci_text}</span>"
            if lab in r["deltas"]:
                better = r["better"].get(lab)
                colour = {True: BETTER, False: WORSE}.get(better, "#57606a")
                d = r["deltas"][lab]
                sign = "+" if d >= 0 else ""
                text += f" <span style='color:{colour};font-weight:bold'>({sign}{fmt(d)})</span>"
            cells.append(f"<td style='{CELL}'>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<table style='{TABLE}'>{head}</tr>{''.join(body)}</table>"
        "<div style='font-size:80%;color:#57606a'>[95% CI] (delta against the baseline): "
        f"<span style='color:{BETTER}'>better</span>, <span style='color:{WORSE}'>worse</span>;"
        " ↑ higher is better, ↓ lower is better.</div>"
    )


def data_table(c) -> str:
    rows = c.fingerprints()
    if not rows:
        return "<p><i>No data was pushed with these versions.</i></p>"
    head = f"<tr><th style='{HEAD}{LEFT}'>data</th>" + "".join(header(c, lab) for lab in c.labels)
    body = []
    for r in rows:
        cells = [f"<td style='{CELL}{LEFT}'>{e(r['role'])}</td>"]
        for lab in c.labels:
            val = r["values"][lab]
            fp = val["fingerprint"]
            if not fp:
                cells.append(f"<td style='{CELL}'>&ndash;</td>")
                continue
            changed = r["changed"][lab] and lab != c.baseline
            mark = f" <b style='color:{WORSE}'>changed</b>" if changed else ""
            rows_text = f" · {val['rows']} rows" if val.get("rows") is not None else ""
            cells.append(
                f"<td style='{CELL}'><code title='{e(fp)}'>{e(fp[:10])}</code>"
                f"{rows_text}{mark}</td>"
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table style='{TABLE}'>{head}</tr>{''.join(body)}</table>"


def schema_list(c) -> str:
    items = []
    for lab, ch in c.schema_changes().items():
        parts = [
            f"{what} {', '.join(e(x) for x in cols)}"
            for what, cols in (
                ("added", ch["added"]),
                ("removed", ch["removed"]),
                ("retyped", ch["retyped"]),
            )
            if cols
        ]
        text = "; ".join(parts) if parts else "same input columns"
        items.append(f"<li>{e(lab)} against {e(c.baseline)}: {text}</li>")
    return f"<ul style='margin:2px 0'>{''.join(items)}</ul>"


def verdicts_table(c) -> str:
    vs = c.verdicts()
    checks: list[str] = []
    for v in vs.values():
        for name in v["checks"]:
            if name not in checks:
                checks.append(name)
    head = f"<tr><th style='{HEAD}{LEFT}'>gate</th>" + "".join(header(c, lab) for lab in c.labels)
    verdict_row = f"<tr><td style='{CELL}{LEFT}'><b>verdict</b></td>" + "".join(
        f"<td style='{CELL}'>{badge(vs[lab]['verdict'], vs[lab]['verdict'] or vs[lab]['status'])}"
        "</td>"
        for lab in c.labels
    )
    rows = [verdict_row + "</tr>"]
    for name in checks:
        rows.append(
            f"<tr><td style='{CELL}{LEFT}'>{e(name)}</td>"
            + "".join(
                f"<td style='{CELL}'>{icon(vs[lab]['checks'].get(name, ''))}</td>"
                for lab in c.labels
            )
            + "</tr>"
        )
    reasons = "".join(f"<li>{e(lab)}: {e(r)}</li>" for lab in c.labels for r in vs[lab]["reasons"])
    return f"<table style='{TABLE}'>{head}</tr>{''.join(rows)}</table>" + (
        f"<ul style='margin:2px 0;font-size:90%'>{reasons}</ul>" if reasons else ""
    )


def charts_html(charts: dict[str, str]) -> str:
    if not charts:
        return "<p><i>No stored results to chart yet.</i></p>"
    imgs = "".join(
        f"<figure style='margin:0'><img alt='{e(name)}' style='max-width:420px' "
        f"src='data:image/png;base64,{png}'></figure>"
        for name, png in charts.items()
    )
    return f"<div style='display:flex;flex-wrap:wrap;gap:8px'>{imgs}</div>"


def page(c, charts: bool = True) -> str:
    parts = [f"<div class='handoff-compare'><b>Comparing {e(', '.join(c.labels))}</b>"]
    if c.checking:
        parts.append(f"<p><i>Still checking: {e(', '.join(c.checking))}.</i></p>")
    parts += ["<h4>Metrics</h4>", metrics_table(c)]
    if charts:
        parts += ["<h4>Charts</h4>", charts_html(c.charts())]
    parts += ["<h4>Data</h4>", data_table(c), "<h4>Schema</h4>", schema_list(c)]
    parts += ["<h4>Gate</h4>", verdicts_table(c), "</div>"]
    return "".join(parts)
