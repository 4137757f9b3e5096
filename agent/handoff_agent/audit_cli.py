"""``jupyter handoff audit``: verify the chain of a home, read the log of a running agent,
and check an exported segment offline.

``audit verify`` opens the home's store, as before. ``audit log`` (``audit export``: the
same as ``log --json``) asks a running agent through ``GET /api/v1/audit``, as the
inventory does (its runtime file, or ``--url`` with the token in ``HANDOFF_TOKEN``), so it
needs a reviewer's or an admin's token. ``audit verify --file`` needs neither.
"""

from __future__ import annotations

import json
import re
import urllib.parse

from traitlets import Bool, Integer, Unicode

from . import audit_log
from ._version import __version__
from .command import Command
from .errors import BadRequest
from .shell import complain, visible
from .vocabulary import when_text

USAGE = (
    "Usage: jupyter handoff audit verify [--home DIR | --agent-role central | --file "
    "EXPORT.jsonl] | audit log [NAME] [--actor U] [--action A] [--since T] [--until T] "
    "[--after SEQ] [--limit N] [--json] [--agent-role central | --url URL] | audit export …"
)
SUMMARY_CHARS = 100
_DIGEST = re.compile(r"[0-9a-f]{40,}")


def summary(payload: str) -> str:
    """A payload in a few words for one line: the reasons first (``why``, ``comment``), then
    ``key=value`` for the rest, nested values as compact JSON, cut at ``SUMMARY_CHARS``."""
    try:
        doc = json.loads(payload or "{}")
    except ValueError:
        doc = payload
    if not isinstance(doc, dict):
        text = json.dumps(doc, separators=(",", ":"))
    else:
        said = ("why", "comment")  # a withdrawal's reason before the sign-off's comment
        parts = [json.dumps(doc[k]) for k in said if doc.get(k)]
        for k, v in doc.items():
            if k in said:
                continue
            shown = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
            shown = _DIGEST.sub(lambda m: m.group()[:12] + "…", shown)  # the JSON has it whole
            parts.append(f"{k}={shown}")
        text = " ".join(parts)
    text = visible(text)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def line(row: dict) -> str:
    """One entry, readable: seq, time (``when_text``, the rule for times shown to people),
    actor, action, subject, payload. --json keeps the time as stored, for the chain's hash."""
    try:
        when = when_text(row["time"], never="-")
    except (TypeError, ValueError):  # not a time (an entry from a damaged chain): as stored
        when = str(row["time"])
    fields = (visible(row["actor"]), visible(row["action"]), visible(row["subject"]))
    return f"{row['seq']:>6}  {visible(when)}  {'  '.join(fields)}  {summary(row['payload'])}"


class AuditApp(Command):
    name = "jupyter-handoff-audit"
    description = (
        "audit verify: check the audit hash chain and name the first bad entry (--file: an "
        "exported segment, offline). audit log [NAME]: the entries, one line each, from the "
        "running agent (reviewer or admin); --json (or audit export): JSON lines with hashes."
    )
    version = __version__
    actor = Unicode("", help="log: only entries by this user (or agent, monitor, watch).").tag(
        config=True
    )
    action = Unicode(
        "", help="log: only this action (signoff, stage.enter), or its kind (stage)."
    ).tag(config=True)
    since = Unicode(
        "", help="log: entries at or after this time: ISO 8601 (no zone: UTC) or epoch seconds."
    ).tag(config=True)
    until = Unicode("", help="log: entries before this time, written as --since.").tag(config=True)
    after = Integer(0, help="log: entries after this seq (the last one a run printed).").tag(
        config=True
    )
    limit = Integer(
        0, help="log: at most this many entries, from 1, in chain order (default: all)."
    ).tag(config=True)
    as_json = Bool(False, help="log: JSON lines of the full entries, hashes included.").tag(
        config=True
    )
    url = Unicode("", help="log: the agent URL, not its runtime file; token: HANDOFF_TOKEN.").tag(
        config=True
    )
    file = Unicode("", help="verify: an export (audit log --json) to check offline.").tag(
        config=True
    )

    @property
    def classes(self):
        from .cli import ServeApp

        return ServeApp.classes.fget(self)  # --help describes the aliases (HandoffAgent)

    aliases = {
        "home": "HandoffAgent.home",
        ("agent-role", "agent"): "HandoffAgent.role",
        "database-url": "HandoffAgent.database_url",
        **{k: f"AuditApp.{k}" for k in ("actor", "action", "since", "until", "after", "limit")},
        "url": "AuditApp.url",
        "file": "AuditApp.file",
    }
    flags = {"json": ({"AuditApp": {"as_json": True}}, "log: JSON lines of the full entries.")}

    def start(self):
        args = list(self.extra_args)
        action = args[0] if args else ""
        logging = action in ("log", "export")
        if action == "verify" and len(args) == 1 and not self._log_options():
            self.exit(self.verify_file() if self.file else self.verify_home())
        if not logging or len(args) > 2 or self.file:
            self.usage_mistake(USAGE)
        given = self.config.HandoffAgent
        if given.get("home") or given.get("database_url"):
            self.usage_mistake(
                "audit log asks the running agent: pick it with --agent-role central or "
                "--url URL, not --home or --database-url."
            )
        role = given.get("role", "local")
        if role not in ("local", "central"):
            self.usage_mistake(f"--agent-role is local or central, not {role!r}.")
        if "limit" in self.config.AuditApp and self.limit < 1:  # as the API's limit: 0 is no page
            self.usage_mistake(
                f"--limit is a whole number from 1 up, not {self.limit}: the first N entries "
                "(leave it out for all)."
            )
        if self.after < 0:
            self.usage_mistake("--after is a whole number >= 0 (the last seq a run printed).")
        try:
            filters = audit_log.parse_filters(
                {
                    "subject": args[1] if len(args) == 2 else None,
                    **{k: getattr(self, k) for k in ("actor", "action", "since", "until")},
                },
                flag="--",
            )
        except BadRequest as e:
            self.usage_mistake(f"{e.message} {e.hint}".strip())
        self.exit(self.log_entries(role, filters, self.as_json or action == "export"))

    def _log_options(self) -> bool:
        filters = (self.actor, self.action, self.since, self.until, self.after, self.limit)
        return any(filters) or self.as_json or bool(self.url)

    def usage_mistake(self, text: str) -> None:
        complain(text)
        self.exit(2)

    def verify_home(self) -> int:
        from .cli import _open_db

        registry = _open_db(self.config)
        try:
            bad = registry.audit_first_bad()
            head = registry.audit_head()
        finally:
            registry.close()
        if bad is None:
            print(f"audit: OK ({head['seq']} entries, head {head['hash'][:16]})")
            return 0
        print(f"audit: BROKEN at entry {bad}: it was changed, deleted or moved.")
        return 1

    def verify_file(self) -> int:
        """An export checked as central checks a delivered segment; one line either way."""
        with open(self.file, encoding="utf-8", errors="replace") as f:
            try:
                rows = audit_log.read_export(f)
                head = audit_log.check_export(rows)
            except audit_log.BadExport as e:
                where = f" at entry {e.seq}" if e.seq is not None else ""
                print(f"audit: BROKEN{where}: {e.message}")
                return 1
        print(
            f"audit: OK ({len(rows)} entries, {rows[0]['seq']} to {head['seq']}, "
            f"head {head['hash'][:16]})"
        )
        return 0

    def log_entries(self, role: str, filters: dict, as_json: bool) -> int:
        """Every matching entry, a page at a time, printed as each page arrives."""
        from .inventory_cli import Unreachable, _request

        after, shown, head, last = self.after, 0, None, self.after
        while True:
            size = audit_log.MAX_LIMIT
            if self.limit:
                size = min(size, self.limit - shown)
            query = urllib.parse.urlencode({**filters, "after": after, "limit": size})
            try:
                page = json.loads(_request(role, self.url, f"/api/v1/audit?{query}")[0])
            except Unreachable as e:
                complain(e)
                return 1
            head = page["head"]
            for row in page["entries"]:
                print(json.dumps(row, sort_keys=True) if as_json else line(row))
            shown += len(page["entries"])
            last = page["entries"][-1]["seq"] if page["entries"] else last
            if "next" not in page or (self.limit and shown >= self.limit):
                break
            after = page["next"]
        if not as_json:
            more = f" (more match: --after {last} goes on)" if "next" in page else ""
            entries = "1 entry" if shown == 1 else f"{shown} entries"
            print(f"{entries}{more}; chain head {head['seq']} {head['hash'][:16]}")
        return 0
