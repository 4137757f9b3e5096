"""The audit chain's rows. Appending locks the chain's head row (``SELECT … FOR UPDATE`` on
PostgreSQL; SQLite's BEGIN IMMEDIATE already holds the write lock), then reads the last
entry, so the seq and the previous hash never race across processes or replicas. Every
append happens inside the transaction of the change it records."""

from __future__ import annotations

import json

from sqlalchemy import func, select, update

from ..audit import GENESIS, canonical, now, row_hash
from . import tables as t
from ._util import as_dict
from .base import StoreBase

MAX_ROWS_FIRST = 10_000  # rows sent when central has acknowledged nothing yet
END_OF_TIME = "9999-12-31T23:59:59.999999+00:00"  # later than any time ``audit.now`` writes


class AuditStore(StoreBase):
    def audit_lock(self, c) -> None:
        """Hold the chain's head row until the transaction ends: every append waits for it,
        so a change checked and made after it cannot race another replica's."""
        c.execute(select(t.audit_head.c.id).where(t.audit_head.c.id == 1).with_for_update()).one()

    def audit_append(self, actor: str, action: str, subject: str, payload: dict) -> dict:
        with self._tx() as c:
            # The head row is the lock; the chain itself says where it ends.
            self.audit_lock(c)
            last = c.execute(
                select(t.audit.c.seq, t.audit.c.hash).order_by(t.audit.c.seq.desc()).limit(1)
            ).first()
            seq, prev = (last.seq, last.hash) if last is not None else (0, GENESIS)
            row = {
                "seq": seq + 1,
                "time": now(),
                "actor": actor or "unknown",
                "action": action,
                "subject": subject,
                "payload": canonical(payload),
                "prev_hash": prev,
            }
            row["hash"] = row_hash(prev, row)
            c.execute(t.audit.insert().values(**row))
            c.execute(
                update(t.audit_head)
                .where(t.audit_head.c.id == 1)
                .values(seq=row["seq"], hash=row["hash"])
            )
            return row

    def audit_append_many(
        self, actor: str, action: str, entries: list[tuple[str, dict]]
    ) -> dict | None:
        """Append one row per ``(subject, payload)``, chained, in one multi-row INSERT (bulk
        imports). Returns the last row."""
        if not entries:
            return None
        with self._tx() as c:
            self.audit_lock(c)
            last = c.execute(
                select(t.audit.c.seq, t.audit.c.hash).order_by(t.audit.c.seq.desc()).limit(1)
            ).first()
            seq, prev = (last.seq, last.hash) if last is not None else (0, GENESIS)
            rows, time_ = [], now()
            for subject, payload in entries:
                seq += 1
                row = {
                    "seq": seq,
                    "time": time_,
                    "actor": actor or "unknown",
                    "action": action,
                    "subject": subject,
                    "payload": canonical(payload),
                    "prev_hash": prev,
                }
                row["hash"] = prev = row_hash(prev, row)
                rows.append(row)
            c.execute(t.audit.insert(), rows)
            c.execute(update(t.audit_head).where(t.audit_head.c.id == 1).values(seq=seq, hash=prev))
            return rows[-1]

    def audit_head(self) -> dict:
        with self._read() as c:
            last = c.execute(
                select(t.audit.c.seq, t.audit.c.hash).order_by(t.audit.c.seq.desc()).limit(1)
            ).first()
        return {"seq": last[0], "hash": last[1]} if last else {"seq": 0, "hash": GENESIS}

    def audit_first_bad(self) -> int | None:
        """The seq of the first row whose chain breaks (edited, deleted or moved), or None."""
        prev, expected = GENESIS, 1
        with self._read() as c:
            for r in c.execute(select(t.audit).order_by(t.audit.c.seq)):
                row = as_dict(r)
                bad = row["seq"] != expected or row["prev_hash"] != prev
                if bad or row_hash(prev, row) != row["hash"]:
                    return row["seq"]
                prev, expected = row["hash"], expected + 1
        return None

    verify_audit = audit_first_bad

    def audit_hash_at(self, seq: int) -> str | None:
        with self._read() as c:
            return c.execute(select(t.audit.c.hash).where(t.audit.c.seq == seq)).scalar()

    def audit_rows(self, actions: tuple[str, ...] = ()) -> list[dict]:
        q = select(t.audit).order_by(t.audit.c.seq)
        if actions:
            q = q.where(t.audit.c.action.in_(actions))
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]

    def audit_page(self, *, limit: int = 100, **filters) -> list[dict]:
        """Up to ``limit`` rows matching ``audit_select``'s filters, in chain order."""
        with self._read() as c:
            return [as_dict(r) for r in c.execute(self.audit_select(**filters).limit(limit))]

    def audit_select(
        self,
        *,
        subject: str = "",
        actor: str = "",
        action: str = "",
        since: str = "",
        until: str = "",
        after: int = 0,
    ):
        """The rows after seq ``after`` matching every filter given, in chain order. A
        ``subject`` without ``:`` matches its versions' subjects too (``churn``: ``churn``
        and ``churn:3``), an ``action`` without ``.`` its kind (``stage``: ``stage.enter``,
        ``stage.mirror``). ``since`` (inclusive) and ``until`` (exclusive) are times as
        ``audit.now`` writes them, so they compare as text on both backends. Each filter is
        one m022's indexes serve."""
        a = t.audit.c
        q = select(t.audit).where(a.seq > after)
        if subject:
            exact = a.subject == subject
            q = q.where(exact if ":" in subject else exact | self._starts(a.subject, f"{subject}:"))
        if actor:  # user names count case-insensitively (``tokens.USER``): Eve is eve
            q = q.where(func.lower(a.actor) == actor.lower())
        if action:  # "stage": stage.enter, stage.mirror
            exact = a.action == action
            q = q.where(exact if "." in action else exact | self._starts(a.action, f"{action}."))
        if since:
            q = q.where(a.time >= since)
        if until or since:
            # bounded on both ends, so SQLite's planner takes the time index: without
            # statistics it judges a one-sided range unselective and reads the chain from seq 1
            q = q.where(a.time < (until or END_OF_TIME))
        return q.order_by(a.seq)

    def _starts(self, column, prefix: str):
        """``column`` starts with ``prefix``, case-sensitive on both backends (SQLite's LIKE
        is not: ``Credit`` is another model than ``credit``) and served by its index: on
        SQLite a range (its BINARY collation orders by bytes: what starts with ``churn:``
        lies in [``churn:``, ``churn;``)); on PostgreSQL a LIKE, which the index's
        text_pattern_ops serves whatever the database's collation."""
        if self.dialect == "postgresql":
            escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
            return column.like(escaped + "%", escape="/")
        return (column >= prefix) & (column < prefix[:-1] + chr(ord(prefix[-1]) + 1))

    def audit_rows_since(self, seq: int | None) -> list[dict]:
        """The rows to send to a central that acknowledged entry ``seq`` (that row included,
        so central can compare it), or the last ``MAX_ROWS_FIRST`` when nothing is."""
        with self._read() as c:
            if seq:
                q = select(t.audit).where(t.audit.c.seq >= seq).order_by(t.audit.c.seq)
                return [as_dict(r) for r in c.execute(q)]
            q = select(t.audit).order_by(t.audit.c.seq.desc()).limit(MAX_ROWS_FIRST)
            return sorted((as_dict(r) for r in c.execute(q)), key=lambda r: r["seq"])

    # -- lifecycle: a run that ends without agent.stop leaves a visible gap ----------------

    def lifecycle_start(self, payload: dict) -> list[dict]:
        """Record ``agent.start``, preceded by ``agent.gap`` when this agent's last run (its
        agent id: replicas sharing a database each have their own) never stopped."""
        with self._tx() as c:
            written = []
            a = t.audit.c
            q = select(a.seq, a.time, a.action).where(
                a.action.in_(("agent.start", "agent.stop")), a.subject == "agent"
            )
            if payload.get("agent_id"):  # replicas share the chain; each has its own runs
                q = q.where(
                    a.payload.contains(
                        f'"agent_id":{canonical(payload["agent_id"])}', autoescape=True
                    )
                )
            last = c.execute(q.order_by(a.seq.desc()).limit(1)).first()
            if last and last.action == "agent.start":
                written.append(
                    self.audit_append(
                        "agent",
                        "agent.gap",
                        "agent",
                        {
                            "started": {"seq": last.seq, "time": last.time},
                            "last_entry": self.audit_head()["seq"],
                            "reason": "the previous run ended without agent.stop "
                            "(killed or crashed)",
                        },
                    )
                )
            written.append(self.audit_append("agent", "agent.start", "agent", payload))
            return written

    def signing_keys(self, since: str) -> dict[str, str]:
        """Agent id -> the signing key its latest start since ``since`` named: the keys
        central replicas sharing this database sign dossiers with."""
        a = t.audit.c
        q = select(a.payload).where(
            a.action == "agent.start", a.subject == "agent", a.time >= since
        )
        out = {}
        with self._read() as c:
            for (payload,) in c.execute(q.order_by(a.seq)):
                p = json.loads(payload or "{}")
                if p.get("agent_id") and p.get("signing_key"):
                    out[p["agent_id"]] = p["signing_key"]
        return out

    def lifecycle_stop(self, payload: dict) -> dict:
        with self._tx():
            return self.audit_append("agent", "agent.stop", "agent", payload)
