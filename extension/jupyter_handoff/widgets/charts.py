"""Side-by-side charts of stored results, drawn with matplotlib into PNGs in the kernel.

matplotlib is imported here only, when a comparison is shown; no pyplot, so the user's
backend is left alone.
"""

from __future__ import annotations

import base64
import io

from ..refs import result_of

COLOURS = ["#0969da", "#bf8700", "#8250df", "#1a7f37", "#cf222e", "#57606a"]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figure(title: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.0))
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _grouped(ax, groups: list[str], series: dict[str, list], errors=None, horizontal=False):
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (lab, values) in enumerate(series.items()):
        pos = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        vals = [v if v is not None else 0.0 for v in values]
        kw = {"color": COLOURS[i % len(COLOURS)], "label": lab}
        if horizontal:
            ax.barh(pos, vals, height=width, **kw)
        else:
            err = None
            if errors and errors.get(lab):
                err = errors[lab]
            ax.bar(pos, vals, width=width, yerr=err, capsize=2, **kw)
    if horizontal:
        ax.set_yticks(range(len(groups)), groups)
        ax.invert_yaxis()
    else:
        ax.set_xticks(range(len(groups)), groups)
    ax.legend(fontsize=7, frameon=False)


def metrics_chart(c) -> str | None:
    rows = [r for r in c.metrics() if r.get("group") == "performance"]
    if not rows:
        return None
    names = [r["metric"] for r in rows]
    series, errors = {}, {}
    for lab in c.labels:
        series[lab] = [r["values"].get(lab) for r in rows]
        lo, hi = [], []
        for r in rows:
            v, ci = r["values"].get(lab), r["ci"].get(lab)
            ok = v is not None and ci and len(ci) == 2
            lo.append(max(v - ci[0], 0) if ok else 0)
            hi.append(max(ci[1] - v, 0) if ok else 0)
        errors[lab] = [lo, hi]
    fig, ax = _figure("Metrics (95% CI)")
    _grouped(ax, names, series, errors)
    return _png(fig)


def fairness_chart(c) -> str | None:
    groups: list[str] = []
    rates: dict[str, dict[str, float]] = {}
    for lab, v in zip(c.labels, c.versions, strict=True):
        for g in (result_of(v, "fairness").get("tables") or {}).get("groups") or []:
            key = f"{g.get('sensitive')}={g.get('group')}"
            if key not in groups:
                groups.append(key)
            rates.setdefault(lab, {})[key] = g.get("selection_rate")
    if not rates:
        return None
    fig, ax = _figure("Selection rate per group")
    _grouped(ax, groups, {lab: [rates.get(lab, {}).get(g) for g in groups] for lab in c.labels})
    return _png(fig)


def importance_chart(c, top: int = 8) -> str | None:
    imps = {}
    for lab, v in zip(c.labels, c.versions, strict=True):
        imp = (result_of(v, "explainability").get("metrics") or {}).get("importance")
        if isinstance(imp, dict) and imp:
            imps[lab] = imp
    if not imps:
        return None
    total: dict[str, float] = {}
    for imp in imps.values():
        for f, x in imp.items():
            if isinstance(x, (int, float)):
                total[f] = total.get(f, 0.0) + abs(x)
    features = sorted(total, key=total.get, reverse=True)[:top]
    fig, ax = _figure("Permutation importance")
    series = {lab: [imps.get(lab, {}).get(f) for f in features] for lab in c.labels}
    _grouped(ax, features, series, horizontal=True)
    return _png(fig)


def latency_chart(c) -> str | None:
    lat = {
        lab: result_of(v, "latency").get("metrics") or {}
        for lab, v in zip(c.labels, c.versions, strict=True)
    }
    if not any(m.get("p50_ms") is not None for m in lat.values()):
        return None
    fig, ax = _figure("Single-row latency (ms)")
    keys = ["p50_ms", "p99_ms"]
    _grouped(ax, ["p50", "p99"], {lab: [lat[lab].get(k) for k in keys] for lab in c.labels})
    return _png(fig)


def draw(c) -> dict[str, str]:
    charts = {}
    if c.task_message:
        makers = [
            ("fairness", fairness_chart),
            ("importance", importance_chart),
            ("latency", latency_chart),
        ]
    else:
        makers = [
            ("metrics", metrics_chart),
            ("fairness", fairness_chart),
            ("importance", importance_chart),
            ("latency", latency_chart),
        ]
    for name, make in makers:
        png = make(c)
        if png:
            charts[name] = png
    return charts
