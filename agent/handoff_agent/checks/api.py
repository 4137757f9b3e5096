"""The check plugin API, kept importable here for plugins written against it.

The whole plugin API is declared in ``handoff_agent.plugins``.
"""

from ..plugins import STATUSES, Check, CheckContext, CheckResult

__all__ = ["STATUSES", "Check", "CheckContext", "CheckResult"]
