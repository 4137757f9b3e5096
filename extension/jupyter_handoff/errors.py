"""User-facing errors, shown in a notebook as one line ``UsageError: …`` plus a hint.

IPython prints that short form only when the exception's type *is* ``UsageError``; a subclass
gets a full traceback. So ``install`` registers a custom exception handler on the shell that
prints ours the same way. They still subclass ``UsageError``: ``except UsageError`` works.
"""

from __future__ import annotations

import re

from IPython.core.error import UsageError


class HandoffUsageError(UsageError):
    """Something the user can fix. The message ends with what to do."""

    def __init__(self, message: str, hint: str = ""):
        self.message, self.hint = message, hint
        super().__init__(f"{message}\n{hint}" if hint else message)


class AgentError(HandoffUsageError):
    """The agent refused a request; carries its JSON error. The line is the agent's message,
    its code after it (what to search the README for): the HTTP status is not the
    analyst's business."""

    def __init__(self, status: int, code: str, message: str, hint: str = ""):
        self.status, self.code, self.detail = status, code, message
        super().__init__(f"{message} ({code})", notebook_hint(hint))


class AgentUnavailable(HandoffUsageError):
    pass


# The agent's hints name HTTP routes (they are written for every client); a notebook user
# needs the magic that does the same thing.
_ROUTE_TAIL = r"[\w/?=&%-]*"
_ROUTES = [
    (
        re.compile(r"(?:GET )?/api/v1/models/([\w.\-]+)/versions/(\d+)" + _ROUTE_TAIL),
        r"`%mlops show \1:\2`",
    ),
    (
        re.compile(r"(?:GET )?/api/v1/models/([\w.\-]+)/versions" + _ROUTE_TAIL),
        r"`%mlops versions \1`",
    ),
    (re.compile(r"(?:GET )?/api/v1/models" + _ROUTE_TAIL), "`%mlops versions`"),
    (re.compile(r"(?:GET )?/api/v1/lineage" + _ROUTE_TAIL), "`%mlops lineage NAME:N`"),
    (
        re.compile(r"(?:GET )?/api/v1/events" + _ROUTE_TAIL),
        "the push widget, or `%mlops show NAME:N`",
    ),
    # the model server's metadata: the version's columns and their types
    (re.compile(r"(?:GET )?/v2/models/[\w.\-]+" + _ROUTE_TAIL), "`%mlops show NAME:N`"),
]
_ANY_ROUTE = re.compile(r"(?:(?:GET|POST|PUT|DELETE) )?/api/v\d+/" + _ROUTE_TAIL)


def notebook_hint(hint: str) -> str:
    """``hint`` with HTTP routes replaced by the magics that do the same."""
    if not hint or ("/api/" not in hint and "/v2/" not in hint):
        return hint or ""
    for pattern, repl in _ROUTES:
        hint = pattern.sub(repl, hint)
    return _ANY_ROUTE.sub("`%mlops agent status`", hint)


def _show(shell, etype, value, tb, tb_offset=None):
    """Print a Handoff error exactly as IPython prints a ``UsageError``: no frames."""
    shell.show_usage_error(value)


def install(shell) -> None:
    """Show ``HandoffUsageError`` in ``shell`` as one line. Keeps another library's handler:
    its exceptions still go to it."""
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return
    previous = tuple(getattr(shell, "custom_exceptions", ()) or ())
    if HandoffUsageError in previous:
        return
    other = getattr(shell, "CustomTB", None) if previous else None

    def handler(self, etype, value, tb, tb_offset=None):
        if isinstance(value, HandoffUsageError) or other is None:
            return _show(self, etype, value, tb, tb_offset)
        return other(etype, value, tb, tb_offset=tb_offset)

    shell.set_custom_exc((HandoffUsageError, *previous), handler)
