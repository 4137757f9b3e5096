"""What a feedback label may be: a number, a text or a boolean (a list of them for a request
of several rows), and a number (or a text that reads as one, "1" from a CSV) where the model
predicts numbers. "yes" for a 0/1 classifier scored every prediction wrong: it fired a
performance alert, and its rollback, from a consumer token."""

from __future__ import annotations

import math

MAX_TEXT = 256  # characters of a text label


def kind(value) -> str | None:
    """``number``, ``text`` or ``boolean``; None for anything a label cannot be."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number" if math.isfinite(value) else None
    if isinstance(value, str):
        return "text" if len(value) <= MAX_TEXT else None
    return None


def problem(pairs: list[tuple[str, object]], served) -> str | None:
    """Why ``pairs`` (request id, label) cannot be labels, in one sentence; None when they
    can. ``served(request_id)``: what the model predicted for it, when this replica knows."""
    for request_id, label in pairs:
        values = label if isinstance(label, list) and label else [label]
        bad = next((v for v in values if kind(v) is None), ...)
        if bad is not ...:
            shown = repr(bad) if len(repr(bad)) <= 40 else repr(bad)[:40] + "…"
            return (
                f"The label of request {request_id!r} is {shown}: a label is a number, a text "
                f"of at most {MAX_TEXT} characters or a boolean (a list of them for rows)."
            )
        predicted = served(request_id)
        if predicted and kind(predicted[0]) == "number" and not _numeric(values[0]):
            return (
                f"The label of request {request_id!r} is {values[0]!r}, but the model "
                f"predicts numbers (it predicted {predicted[0]!r})."
            )
    return None


def _numeric(value) -> bool:
    """A number (a boolean is 0 or 1), or a text that reads as one ("1" from a CSV)."""
    if kind(value) in ("number", "boolean"):
        return True
    try:
        return isinstance(value, str) and math.isfinite(float(value))
    except ValueError:
        return False
