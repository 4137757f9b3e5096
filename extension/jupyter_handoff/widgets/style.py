"""Shared look: status icons and colours, as plain strings (no ipywidgets needed)."""

from __future__ import annotations

import html

# The shared vocabulary; re-exported for the widgets.
from handoff_agent.vocabulary import BETTER_COLOUR as BETTER  # noqa: F401
from handoff_agent.vocabulary import CHECK_STATUSES as FINAL  # noqa: F401
from handoff_agent.vocabulary import (  # noqa: F401
    PROVISIONAL_FIELD,
    PROVISIONAL_WORDS,
    STATUS_VERDICT,
    VERDICT_WORDS,
    stage_text,
)
from handoff_agent.vocabulary import WORSE_COLOUR as WORSE  # noqa: F401

ICONS = {
    "queued": ("○", "#8c959f"),
    "running": ("◔", "#9a6700"),
    "pass": ("✔", "#1a7f37"),
    "warn": ("▲", "#9a6700"),
    "fail": ("✘", "#cf222e"),
    "error": ("✘", "#cf222e"),
    "skip": ("\u2013", "#8c959f"),
}
VERDICT_COLOURS = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}

e = html.escape


def icon(status: str) -> str:
    glyph, colour = ICONS.get(status, ("?", "#57606a"))
    return f"<span style='color:{colour};font-weight:bold' title='{e(status)}'>{glyph}</span>"


def badge(verdict: str | None, text: str | None = None, provisional: bool = False) -> str:
    """A verdict's coloured label; a provisional one is outlined, not filled."""
    colour = VERDICT_COLOURS.get(verdict or "", "#57606a")
    label = e(text or verdict or "checking")
    if provisional:
        return (
            f"<span style='border:1px dashed {colour};color:{colour};border-radius:3px;"
            f"padding:0 6px;font-size:90%' title='provisional'>{label}</span>"
        )
    return (
        f"<span style='background:{colour};color:white;border-radius:3px;"
        f"padding:0 6px;font-size:90%'>{label}</span>"
    )


def seconds(s: float | None) -> str:
    if s is None:
        return ""
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def forward_text(forward: dict) -> str:
    """Where one hand-off stands: 'central: pending (Central is not answering …)'."""
    state = forward.get("state") or "pending"
    error = forward.get("last_error")
    note = f" ({one_line(error)})" if state != "delivered" and error else ""
    return f"{forward.get('destination')}: {state}{note}"


def one_line(text: str | None, width: int = 140) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
