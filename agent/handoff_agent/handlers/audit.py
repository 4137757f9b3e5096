"""The audit log, read: ``GET /api/v1/audit``."""

from __future__ import annotations

from .. import audit_log
from .base import AFTER_HINT, BaseHandler, int_arg


class AuditHandler(BaseHandler):
    """Entries of the hash chain in chain order, filtered (subject, actor, action, since,
    until) and paged (``after``, ``limit``; ``next`` while more match), hashes included so
    an export checks offline.

    Reviewers and admins only: the log is every model's and every user's history (token
    grants and revocations by user name, trust changes, who signed what), while an analyst's
    reads are of models (a version's own audit rows reach them in its dossier) and a
    consumer calls models only. A local agent's owner token holds every role, so the
    analyst who owns the agent still reads its log."""

    roles = {"GET": ("reviewer", "admin")}
    does = "read the audit log"
    noun = "the audit log"

    def repeated_hint(self, key: str, example: str) -> str:
        return audit_log.repeated_hint(key, example)

    async def get(self):
        args = {k: self.get_query_argument(k, None) for k in audit_log.FILTERS}
        filters = audit_log.parse_filters(args, blank=True)
        limit = int_arg(self, "limit", audit_log.DEFAULT_LIMIT, 1, audit_log.MAX_LIMIT)
        after = int_arg(self, "after", 0, 0, 2**62, AFTER_HINT)
        agent = self.agent
        self.write_json(await agent.read(audit_log.page, agent.registry, filters, after, limit))
