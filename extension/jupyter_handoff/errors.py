"""User-facing errors. A ``UsageError`` shows in a notebook as one message, no traceback."""

from __future__ import annotations

from IPython.core.error import UsageError


class HandoffUsageError(UsageError):
    """Something the user can fix. The message ends with what to do."""

    def __init__(self, message: str, hint: str = ""):
        self.message, self.hint = message, hint
        super().__init__(f"{message}\n{hint}" if hint else message)


class AgentError(HandoffUsageError):
    """The agent refused a request; carries its JSON error."""

    def __init__(self, status: int, code: str, message: str, hint: str = ""):
        self.status, self.code = status, code
        super().__init__(f"The agent refused the request ({status} {code}): {message}", hint)


class AgentUnavailable(HandoffUsageError):
    pass
