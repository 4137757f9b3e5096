"""Names that reach the registry. Checked before they are used anywhere."""

from __future__ import annotations

import re

from .errors import BadRequest

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
NAME_RE = re.compile(rf"^{NAME_PATTERN}$")


# ASCII control characters (C0 and DEL) in a caller's text: a message quoting the text
# strips them (handlers.base.shown), a filter carrying them is refused (audit_log).
CONTROL = re.compile("[\x00-\x1f\x7f]")

HINT = "Use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, with no '..'."


def is_valid(name) -> bool:
    """The one rule, for the agent and the notebook alike."""
    return isinstance(name, str) and bool(NAME_RE.fullmatch(name)) and ".." not in name


def validate_name(name: str) -> str:
    if not is_valid(name):
        raise BadRequest(f"Invalid model name {name!r}.", HINT, code="invalid_name")
    return name


def typed_name(arg: str) -> str:
    """A model name typed on a command line; ValueError says what is wrong."""
    if not is_valid(arg):
        raise ValueError(f"{arg!r} is not a model name.")
    return arg


def typed_ref(arg: str) -> tuple[str, int]:
    """``NAME:N`` typed on a command line; ValueError says what is wrong."""
    name, _, number = arg.partition(":")
    if not number.isascii() or not number.isdigit():
        raise ValueError(f"{arg!r} is not NAME:N, e.g. churn:3.")
    return typed_name(name), int(number)
