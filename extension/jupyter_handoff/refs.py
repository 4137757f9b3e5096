"""Names and references to versions: parse ``NAME:N``, check a name, label a version, find a
check's result in it. Plain functions with no imports of our own beyond errors, so the API,
the magics, the comparison and the widgets all build on this module and none on another."""

from __future__ import annotations

from .errors import HandoffUsageError


def parse_ref(ref: str) -> tuple[str, int | None]:
    name, _, number = ref.partition(":")
    if number and not number.isdigit():
        raise HandoffUsageError(
            f"{ref!r}: the version must be a number.", "Write NAME:N, e.g. churn:3."
        )
    return name, int(number) if number else None


def checked_name(name) -> str:
    from handoff_agent.names import HINT, is_valid

    if not is_valid(name):
        raise HandoffUsageError(f"{name!r} is not a valid model name.", HINT)
    return name


def version_number(number, example: str) -> int:
    """A version number from an int (numpy ints too) or a string of digits."""
    import operator

    if isinstance(number, str) and number.isdigit():
        return int(number)
    try:
        if not isinstance(number, bool):
            return operator.index(number)
    except TypeError:
        pass
    raise HandoffUsageError(f"The version must be a whole number, not {number!r}.", example)


def label(v: dict) -> str:
    return f"{v.get('model')}:{v.get('number')}"


def check_of(v: dict, name: str) -> dict:
    for c in v.get("checks") or []:
        if c.get("name") == name:
            return c
    return {}


def result_of(v: dict, name: str) -> dict:
    return check_of(v, name).get("result") or {}


def trust_wait(data: dict) -> str:
    """What central waits for, when a version is held in needs_trust; else ''."""
    types = data.get("needs_trust") or []
    if data.get("stage") != "needs_trust" or not types:
        return ""
    return f"central is waiting for an admin to trust: {', '.join(types)}"
