"""Reading the audit log: the filters of ``GET /api/v1/audit`` and ``jupyter handoff audit
log``, a page of entries, and the offline check of an exported segment.

The filters are parsed here once, for the API and the command alike; the SQL is the
metadata store's (``audit_page``)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from .audit import ROW_KEYS, first_break, is_row
from .errors import BadRequest
from .names import CONTROL

FILTERS = ("subject", "actor", "action", "since", "until")
TEXT_FILTERS = ("subject", "actor", "action")
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
_EPOCH = re.compile(r"[0-9]{1,11}(\.[0-9]{1,6})?")
_BASIC_DATE = re.compile(r"(19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])")  # 20261208
TIME_HINT = "Give an ISO time (2026-12-07, 2026-12-07T10:00:00Z; no zone is UTC) or epoch seconds."


def parse_time(name: str, raw: str) -> str:
    """An ISO 8601 time (no zone: UTC; 20261208 is a date, not 1970) or epoch seconds, as
    the audit log writes times
    (UTC, microseconds), so that it compares with them as text; else BadRequest."""
    raw = raw.strip()
    try:
        if _EPOCH.fullmatch(raw) and not _BASIC_DATE.fullmatch(raw):
            when = datetime.fromtimestamp(float(raw), UTC)
        else:
            when = datetime.fromisoformat(raw)
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        raise BadRequest(
            f"{name} is not a time: {raw[:60]!r}.", TIME_HINT, code="bad_time"
        ) from None
    return when.isoformat(timespec="microseconds")


def parse_filters(
    given: dict[str, str | None], flag: str = "", blank: bool = False
) -> dict[str, str]:
    """The filters given (``None``/empty: not given), checked: text of at most 200
    characters without control characters, and times normalised. ``flag``: ``--`` when the
    command's options gave them, so a mistake names the option typed (NAME: the subject).
    ``blank``: one given empty (``None``: not given) is refused, as the API does: ``?subject=``,
    or ``?subject=%00`` that tornado cleans to nothing, would read the whole log."""

    def named(key: str) -> str:
        return "NAME" if flag and key == "subject" else flag + key

    for key in FILTERS if blank else ():
        if given.get(key) is not None and not given[key].strip():
            raise BadRequest(
                f"{named(key)} is empty (once control characters are removed).",
                f"Give {key} a value, or leave {key} out to see every entry.",
                code="bad_filter",
            )
    out = {}
    for key in TEXT_FILTERS:
        value = (given.get(key) or "").strip()
        if not value:
            continue
        if len(value) > 200 or CONTROL.search(value):
            raise BadRequest(
                f"{named(key)} must be at most 200 characters, without control characters.",
                "e.g. subject=churn or subject=churn:3, actor=alice, action=signoff",
                code="bad_filter",
            )
        out[key] = value
    for key in ("since", "until"):
        if given.get(key):
            out[key] = parse_time(named(key), given[key])
    if "since" in out and "until" in out and out["until"] <= out["since"]:
        raise BadRequest(
            f"{flag}until must be later than {flag}since.",
            "since counts from its time on and until stops just before its own: e.g. "
            f"{flag}since 2026-12-01 {flag}until 2026-12-02 for one day."
            if flag
            else "since counts from its time on and until stops just before its own: e.g. "
            "since=2026-12-01&until=2026-12-02 for one day.",
        )
    return out


def repeated_hint(key: str, example: str) -> str:
    """A filter given twice: of ``?actor=a&actor=b`` one would count, silently, as the
    filters all apply together (the shared rule refuses it: ``BaseHandler.check_query``)."""
    if key in TEXT_FILTERS:
        return (
            f"Ask once for each {key} (e.g. {key}={example}), or leave {key} out to see them all."
        )
    return f"Give {key} once."


def page(registry, filters: dict[str, str], after: int = 0, limit: int = DEFAULT_LIMIT) -> dict:
    """One page of matching entries in chain order, with ``next`` (the ``after`` of the
    following page) while more match, and the chain's head, to compare an export with."""
    rows = registry.audit_page(**filters, after=after, limit=limit + 1)
    body = {"entries": rows[:limit], "head": registry.audit_head()}
    if len(rows) > limit:
        body["next"] = rows[limit - 1]["seq"]
    return body


# -- an exported segment, checked offline ----------------------------------------------------


class BadExport(Exception):
    """An export that does not verify; ``seq`` names the first bad entry (None: the file)."""

    def __init__(self, message: str, seq: int | None = None):
        super().__init__(message)
        self.message, self.seq = message, seq


def _no_duplicate_keys(pairs) -> dict:
    """JSON readers disagree on a repeated key (first or last wins): a line with one is not
    what the agent wrote, whatever its hash says."""
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("a repeated key")
    return dict(pairs)


def read_export(lines) -> list[dict]:
    """The entries of a JSON-lines export, blank lines skipped; ``BadExport`` names the
    first line that is no entry."""
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except ValueError:
            raise BadExport(f"line {n} is not JSON, or repeats a key.") from None
        if not is_row(row) or set(row) != set(ROW_KEYS):  # nothing added beside the hash
            raise BadExport(f"line {n} is not an audit entry: exactly {', '.join(ROW_KEYS)}.")
        rows.append(row)
    if not rows:
        raise BadExport("the file holds no audit entries.")
    return rows


def check_export(rows: list[dict]) -> dict:
    """The chain rule central applies to a delivery (``audit.first_break``), in an export's
    words. Returns the last entry's seq and hash: compare it with ``audit verify``'s head."""
    broken = first_break(rows)
    if broken is None:
        return {"seq": rows[-1]["seq"], "hash": rows[-1]["hash"]}
    how, row, prev = broken
    if how == "hash":
        why = "it does not match its hash: it was edited after it was written."
        raise BadExport(why, row["seq"])
    if how == "genesis":
        raise BadExport("it is the first entry but does not start from the genesis.", row["seq"])
    raise BadExport(
        f"it does not link to entry {prev['seq']} before it: entries are missing, moved or "
        "replaced (a log filtered by subject, actor or action has gaps: export without those "
        "filters to check the chain).",
        row["seq"],
    )
