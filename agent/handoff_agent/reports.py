"""Reports for a checked version: self-contained HTML, a JSON result, a Markdown model card.

Everything user-supplied (names, columns, messages, tags) is escaped: HTML by jinja2's
autoescape, Markdown by ``md_escape``. Plots arrive as base64 PNGs from the worker and are
embedded, so a report is one file with no external requests.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re

from jinja2 import Environment, PackageLoader, select_autoescape

from .shell import visible

KINDS = {
    "html": "text/html; charset=utf-8",
    "json": "application/json; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
}
PNG = b"\x89PNG\r\n\x1a\n"
_env = Environment(
    loader=PackageLoader("handoff_agent", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
    trim_blocks=True,
    lstrip_blocks=True,
)


def md_escape(value) -> str:
    """Text safe inside Markdown (and the HTML a Markdown renderer allows), on one line: a CR
    ends a line in Markdown too, and the card is printed to terminals (control characters
    shown as escapes)."""
    text = re.sub(r"[\r\n]+", " ", str(value if value is not None else ""))
    text = html.escape(visible(text), quote=True)
    return re.sub(r"([\\`*_\[\]|~])", r"\\\1", text)


def safe_png(data: str) -> str | None:
    """Only real PNGs are embedded; anything else a plugin returns is dropped."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return None
    return base64.b64encode(raw).decode() if raw.startswith(PNG) else None


def fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(b, float) for b in value):
        return f"[{fmt(value[0])}, {fmt(value[1])}]"  # an interval, as its bounds read
    if isinstance(value, list) and value and all(b is None for b in value):
        return "n/a"  # an interval with no finite bound (a constant target)
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)[:200]
    return str(value)


def _context(version: dict) -> dict:
    checks = []
    for c in version.get("checks", []):
        result = c.get("result") or {}
        plots = {k: p for k, v in (result.get("plots") or {}).items() if (p := safe_png(v))}
        checks.append(
            {
                **c,
                "metrics": result.get("metrics") or {},
                "tables": result.get("tables") or {},
                "plots": plots,
            }
        )
    from .serving.validation import summary

    val = summary(version.get("validation"))
    return {
        "v": version,
        "m": version.get("manifest") or {},
        "checks": checks,
        "fmt": fmt,
        "val": val,
    }


HTML_TEMPLATE, CARD_TEMPLATE = "report.html.j2", "model_card.md.j2"


def warm() -> None:
    """Compile the templates and import what a report reads: about 0.1 s, which the first
    push's report would otherwise wait for."""
    from .serving.validation import summary  # noqa: F401

    for name in (HTML_TEMPLATE, CARD_TEMPLATE):
        _env.get_template(name)


def render(version: dict) -> dict[str, bytes]:
    """All report kinds for ``version`` (a registry version dict with checks and verdict)."""
    ctx = _context(version)
    result = {
        "name": version["model"],
        "version": version["number"],
        "digest": version["digest"],
        "verdict": version.get("verdict"),
        "checks": [
            {k: c.get(k) for k in ("name", "status", "message", "duration", "metrics", "tables")}
            for c in ctx["checks"]
        ],
        "validation": ctx["val"],  # central: backend, ONNX parity, load test and gate
    }
    return {
        "html": _env.get_template(HTML_TEMPLATE).render(ctx).encode(),
        "json": json.dumps(result, indent=1, default=str).encode(),
        "md": _env.get_template(CARD_TEMPLATE).render(ctx, e=md_escape).encode(),
    }
