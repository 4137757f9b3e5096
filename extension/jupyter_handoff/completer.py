"""Tab completion for ``%mlops``: subcommands, options, model names and version numbers.

Registered as an IPython ``complete_command`` hook at ``%load_ext``; it imports nothing heavy
and asks the agent (with a short timeout) only when a model name is being completed.
"""

from __future__ import annotations

NAME_ARGS = {"versions", "show", "report", "compare", "history"}
AGENT_ACTIONS = ["status", "start", "stop"]
TIMEOUT = 1.0


def _client():
    from .client import connect

    client = connect(start=False, announce=lambda *_: None)
    client.timeout = TIMEOUT
    return client


def model_names() -> list[str]:
    try:
        return [m["name"] for m in _client().get("/api/v1/models")["models"]]
    except Exception:
        return []


def version_numbers(name: str) -> list[str]:
    try:
        rows = _client().get(f"/api/v1/models/{name}/versions?limit=100")["versions"]
    except Exception:
        return []
    return [str(r["number"]) for r in rows]


def options(sub: str) -> list[str]:
    from .magics import PARSERS

    return sorted(o for a in PARSERS[sub]._actions for o in a.option_strings)


def complete(text_until_cursor: str) -> list[str]:
    """Candidates for the word being typed after ``%mlops``."""
    from .magics import PARSERS

    words = text_until_cursor.split()
    if words and words[0].lstrip("%") == "mlops":
        words = words[1:]
    current = "" if text_until_cursor.endswith((" ", "\t")) or not words else words.pop()
    if not words:  # the subcommand
        return [s for s in PARSERS if s.startswith(current)]
    sub, previous = words[0], words[-1]
    if sub not in PARSERS:
        return []
    if current.startswith("-"):
        return [o for o in options(sub) if o.startswith(current)]
    if sub == "agent":
        return [a for a in AGENT_ACTIONS if a.startswith(current)] if len(words) == 1 else []
    if sub == "push" and previous != "--name":
        return []  # variables: IPython's own completion
    if sub not in NAME_ARGS and previous != "--name":
        return []
    if sub in ("versions", "history") and len(words) > 1 and not previous.startswith("-"):
        return []
    if ":" in current and sub in ("show", "report", "compare"):
        name, _, typed = current.partition(":")
        return [n for n in version_numbers(name) if n.startswith(typed)]
    return [n for n in model_names() if n.startswith(current)]


def _hook(_shell, event):
    found = complete(event.text_until_cursor)
    # IPython splits words at ':', so after "churn:" it completes just the number.
    return found or None


def register(ipython) -> None:
    ipython.set_hook("complete_command", _hook, str_key="%mlops")
