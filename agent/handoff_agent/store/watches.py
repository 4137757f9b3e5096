"""Watched data sources: their rows, their fingerprint history and what their changes
triggered. ``watch.service.WatchService`` alone writes them."""

from __future__ import annotations

import json

from sqlalchemy import func, or_, select

from ..vocabulary import TRIGGER_STATES, owed_again
from . import tables as t
from ._util import as_dict, claim, loads, now
from .base import StoreBase

S = t.data_sources.c
N = t.source_snapshots.c
T = t.triggers.c
R = t.revalidations.c
V = t.versions.c

PUBLIC = (
    S.id,
    S.model,
    S.kind,
    S.source,
    S.query,
    S.every,
    S.overdue,
    S.on,
    S.actions,
    S.run,
    S.params,
    S.target,
)


def _source(row) -> dict:
    d = as_dict(row)
    for key in ("on", "actions", "params"):
        if key in d:
            d[key] = loads(d[key]) or ([] if key != "params" else {})
    d.pop("secret", None)
    return d


def _trigger(row) -> dict:
    d = {**as_dict(row), "detail": loads(row.detail)}
    d.pop("claimed_by", None), d.pop("claimed_until", None)  # the store's bookkeeping
    return d


def _kept(c, trigger_id: int, detail) -> dict:
    """A trigger's new detail, still saying which interrupted retrain it re-runs."""
    was = loads(c.execute(select(T.detail).where(T.id == trigger_id)).scalar()) or {}
    if "retry_of" in was:
        return {"retry_of": was["retry_of"], **(detail or {})}
    return dict(detail or {})


class WatchStore(StoreBase):
    def watch_add(self, spec: dict, by: str) -> dict:
        """Add a source to a model's watch list, or replace the settings of the same one
        (``replaced``: it was watched, and its earlier settings are gone)."""
        values = {
            "kind": spec["kind"],
            "query": spec.get("query"),
            "secret": spec.get("secret"),
            "every": float(spec["every"]),
            "overdue": spec.get("overdue"),
            "on": json.dumps(spec["on"]),
            "actions": json.dumps(spec["actions"]),
            "run": spec.get("run"),
            "params": json.dumps(spec.get("params") or {}),
            "timeout": float(spec.get("timeout") or 600),
            "target": spec.get("target"),
            "by": by,
            "next_due": 0.0,
            "active": 1,
        }
        with self._tx() as c:
            same = (S.model == spec["model"], S.source == spec["source"])
            was = c.execute(select(S.id, S.active).where(*same)).first()
            replaced = was is not None and bool(was.active)
            if was is not None and not was.active:
                self._end_baseline(c, was.id)
            stmt = self._insert(t.data_sources).values(
                model=spec["model"], source=spec["source"], created=now(), **values
            )
            c.execute(stmt.on_conflict_do_update(index_elements=["model", "source"], set_=values))
            row = c.execute(
                select(*PUBLIC).where(S.model == spec["model"], S.source == spec["source"])
            ).one()
            self.audit_append(
                by,
                "watch.add",
                spec["model"],
                {"source": spec["source"], "on": spec["on"], "actions": spec["actions"]},
            )
            return {**_source(row), "replaced": replaced}

    def _end_baseline(self, c, source_id: int) -> None:
        """A source watched again after a remove: its earlier watch's last snapshot is marked
        ``ended`` in its detail, so that the next fingerprint is a new baseline (``first``),
        not a change against it."""
        last = c.execute(
            select(N.id, N.detail).where(N.source_id == source_id).order_by(N.id.desc()).limit(1)
        ).first()
        if last is not None:
            detail = {**(loads(last.detail) or {}), "ended": True}
            c.execute(
                t.source_snapshots.update()
                .where(N.id == last.id)
                .values(detail=json.dumps(detail, sort_keys=True, default=str))
            )

    def watch_remove(self, source_id: int, by: str) -> bool:
        with self._tx() as c:
            row = c.execute(select(S.model, S.source).where(S.id == source_id)).first()
            if row is None:
                return False
            c.execute(t.data_sources.update().where(S.id == source_id).values(active=0))
            self.audit_append(by, "watch.remove", row.model, {"source": row.source})
            return True

    def watches(self, model: str | None = None) -> list[dict]:
        q = select(*PUBLIC, S.timeout, S.next_due, S.created, S.by).where(S.active == 1)
        if model is not None:
            q = q.where(S.model == model)
        with self._read() as c:
            return [_source(r) for r in c.execute(q.order_by(S.model, S.id))]

    def watches_ever(self) -> list[dict]:
        """Every source ever watched, a removed one too (``removed``: its watch was stopped):
        the lineage keeps what its changes triggered and retrained."""
        q = select(*PUBLIC, S.active).order_by(S.model, S.id)
        with self._read() as c:
            return [
                {**{k: v for k, v in _source(r).items() if k != "active"}, "removed": not r.active}
                for r in c.execute(q)
            ]

    def watch_get(self, source_id: int, with_secret: bool = False) -> dict | None:
        cols = (*PUBLIC, S.timeout, S.next_due, S.active) + ((S.secret,) if with_secret else ())
        with self._read() as c:
            row = c.execute(select(*cols).where(S.id == source_id)).first()
        if row is None:
            return None
        out = _source(row)
        if with_secret:
            out["secret"] = row.secret
        return out

    def watches_due(self, at: float) -> list[int]:
        with self._read() as c:
            q = select(S.id).where(S.active == 1, S.next_due <= at).order_by(S.next_due)
            return list(c.execute(q).scalars())

    def watch_claim(self, source_id: int, due: float, next_due: float) -> bool:
        """Move a due source to its next time; only one agent (or replica) wins the claim."""
        with self._tx() as c:
            n = c.execute(
                t.data_sources.update()
                .where(S.id == source_id, S.next_due <= due, S.active == 1)
                .values(next_due=next_due)
            ).rowcount
            return bool(n)

    # -- fingerprints ----------------------------------------------------------------------

    def snapshot_add(
        self,
        source_id: int,
        fp: dict,
        change: str,
        psi,
        detail: dict,
        after: int | None,
        owed: tuple[str, ...] = (),
        owner: str | None = None,
        until: float | None = None,
    ) -> dict | None:
        """The source's next snapshot, classified against snapshot ``after`` (None: none yet);
        None, and nothing stored, when another check stored one since (the source's row is
        locked first, so two checks at once, here or at another replica, are ordered).
        ``owed``: the actions the change sets off, stored with it as pending triggers claimed
        by ``owner`` until ``until`` (the snapshot's ``owed`` maps each to its trigger)."""
        with self._tx() as c:
            c.execute(select(S.id).where(S.id == source_id).with_for_update()).first()
            last = c.execute(select(func.max(N.id)).where(N.source_id == source_id)).scalar()
            if last != after:
                return None
            row = {
                "source_id": source_id,
                "time": now(),
                "fingerprint": fp["fingerprint"],
                "size": fp.get("size"),
                "mtime": fp.get("mtime"),
                "rows": fp.get("rows"),
                "schema_hash": fp.get("schema_hash"),
                "max_updated": fp.get("max_updated"),
                "stats": json.dumps(fp.get("stats") or {}, sort_keys=True),
                "change": change,
                "psi": psi,
                "detail": json.dumps(detail or {}, sort_keys=True, default=str),
            }
            new_id = c.execute(t.source_snapshots.insert().values(**row)).inserted_primary_key[0]
            pending = {
                action: c.execute(
                    t.triggers.insert().values(
                        source_id=source_id,
                        snapshot_id=new_id,
                        change=change,
                        action=action,
                        state="pending",
                        detail="{}",
                        time=row["time"],
                        claimed_by=owner,
                        claimed_until=until,
                    )
                ).inserted_primary_key[0]
                for action in owed
            }
            if pending:
                watched = c.execute(select(S.model, S.source).where(S.id == source_id)).one()
                self.audit_append(
                    "watch",
                    "watch.change",
                    f"source:{source_id}",
                    {
                        "model": watched.model,
                        "source": watched.source,
                        "snapshot": new_id,
                        "change": change,
                        "owed": pending,
                    },
                )
            snap = {**row, "id": new_id, "stats": fp.get("stats") or {}, "detail": detail}
            return {**snap, "owed": pending}

    def snapshot_get(self, snapshot_id: int) -> dict | None:
        with self._read() as c:
            r = c.execute(select(t.source_snapshots).where(N.id == snapshot_id)).first()
        return {**as_dict(r), "stats": loads(r.stats), "detail": loads(r.detail)} if r else None

    def snapshots(self, source_id: int, limit: int = 100) -> list[dict]:
        with self._read() as c:
            q = select(t.source_snapshots).where(N.source_id == source_id)
            rows = c.execute(q.order_by(N.id.desc()).limit(limit))
            return [
                {**as_dict(r), "stats": loads(r.stats), "detail": loads(r.detail)} for r in rows
            ]

    def snapshot_last(self, source_id: int) -> dict | None:
        rows = self.snapshots(source_id, 1)
        return rows[0] if rows else None

    def unchanged_since(self, source_id: int, fingerprint: str) -> str | None:
        """When the source last began to hold ``fingerprint``: the time of the first of the
        latest snapshots that all have it (None if the last one has another)."""
        with self._read() as c:
            other = c.execute(
                select(func.max(N.id)).where(N.source_id == source_id, N.fingerprint != fingerprint)
            ).scalar()
            q = select(func.min(N.time)).where(N.source_id == source_id)
            if other is not None:
                q = q.where(N.id > other)
            return c.execute(q).scalar()

    def snapshot_first(self, source_id: int) -> dict | None:
        with self._read() as c:
            r = c.execute(
                select(t.source_snapshots).where(N.source_id == source_id).order_by(N.id).limit(1)
            ).first()
        return {**as_dict(r), "stats": loads(r.stats), "detail": loads(r.detail)} if r else None

    # -- triggers --------------------------------------------------------------------------

    def trigger_add(
        self, source_id: int, snapshot_id: int, change: str, action: str, state: str, detail
    ) -> int:
        """A trigger's row and its audit row (naming the model and the source), in one
        transaction."""
        with self._tx() as c:
            tid = c.execute(
                t.triggers.insert().values(
                    source_id=source_id,
                    snapshot_id=snapshot_id,
                    change=change,
                    action=action,
                    state=state,
                    detail=json.dumps(detail or {}, sort_keys=True, default=str),
                    time=now(),
                )
            ).inserted_primary_key[0]
            self._trigger_audit(c, tid, source_id, snapshot_id, change, action, state)
            return tid

    def trigger_start(self, trigger_id: int, state: str, detail) -> bool:
        """A pending trigger carried out (``state``, not pending): its row and its audit row.
        False if it was not pending (another agent carried it out)."""
        with self._tx() as c:
            return self._trigger_start(c, trigger_id, state, detail)

    def _trigger_start(self, c, trigger_id: int, state: str, detail) -> bool:
        if state not in TRIGGER_STATES[1:]:
            raise ValueError(f"not a state a trigger is carried out to: {state!r}")
        detail = _kept(c, trigger_id, detail)
        n = c.execute(
            t.triggers.update()
            .where(T.id == trigger_id, T.state == "pending")
            .values(
                state=state,
                detail=json.dumps(detail or {}, sort_keys=True, default=str),
                time=now(),
                claimed_by=None,
                claimed_until=None,
            )
        ).rowcount
        if n:
            r = c.execute(select(t.triggers).where(T.id == trigger_id)).one()
            self._trigger_audit(c, r.id, r.source_id, r.snapshot_id, r.change, r.action, state)
        return bool(n)

    def _trigger_audit(
        self, c, tid, source_id, snapshot_id, change, action, state, extra=None
    ) -> None:
        watched = c.execute(select(S.model, S.source).where(S.id == source_id)).first()
        self.audit_append(
            "watch",
            f"trigger.{action}",
            f"source:{source_id}",
            {
                "trigger": tid,
                "model": watched.model if watched else None,
                "source": watched.source if watched else None,
                "snapshot": snapshot_id,
                "change": change,
                "state": state,
                **(extra or {}),
            },
        )

    def triggers_owed(self, owner: str, at: float, until: float, limit: int = 20) -> list[dict]:
        """Claim the pending triggers no agent holds (their agent died before carrying them
        out, or its claim lapsed), oldest first."""
        due = (
            select(T.id)
            .where(T.state == "pending", or_(T.claimed_until.is_(None), T.claimed_until < at))
            .order_by(T.id)
            .limit(limit)
        )
        with self._tx() as c:
            ids = claim(c, t.triggers, due, owner, until)
            if not ids:
                return []
            q = select(t.triggers).where(T.id.in_(ids)).order_by(T.id)
            return [_trigger(r) for r in c.execute(q)]

    def triggers_release(self, owner: str) -> int:
        """The pending triggers this agent held when it stopped or died: owed again now."""
        with self._tx() as c:
            return c.execute(
                t.triggers.update()
                .where(T.claimed_by == owner, T.state == "pending")
                .values(claimed_by=None, claimed_until=None)
            ).rowcount

    def trigger_done(self, trigger_id: int, state: str, detail: dict) -> None:
        with self._tx() as c:
            self._trigger_finished(c, trigger_id, state, detail)

    def _trigger_finished(self, c, trigger_id: int, state: str, detail: dict) -> None:
        """The trigger's end and its audit row, in the caller's transaction. The row says what
        an auditor asks without another lookup: the watch (its id, model and source), the
        change and action, and what it produced (a retrain's ``versions``, a revalidation's
        ``version``), besides the trigger's own detail."""
        detail = _kept(c, trigger_id, detail)
        c.execute(
            t.triggers.update()
            .where(T.id == trigger_id)
            .values(state=state, detail=json.dumps(detail, sort_keys=True, default=str))
        )
        r = c.execute(
            select(T.source_id, T.snapshot_id, T.change, T.action, S.model, S.source)
            .select_from(t.triggers.outerjoin(t.data_sources, S.id == T.source_id))
            .where(T.id == trigger_id)
        ).first()
        about = {
            "trigger": trigger_id,
            "watch": r.source_id if r else None,
            "model": r.model if r else None,
            "source": r.source if r else None,
            "snapshot": r.snapshot_id if r else None,
            "change": r.change if r else None,
            "action": r.action if r else None,
        }
        if about["action"] == "revalidate" and "version" not in detail:
            about["version"] = c.execute(
                select(V.number)
                .join(t.revalidations, R.version_id == V.id)
                .where(R.trigger_id == trigger_id)
            ).scalar()
        self.audit_append(
            "watch", "trigger.done", f"trigger:{trigger_id}", {**detail, **about, "state": state}
        )

    def retrains_running(self) -> list[dict]:
        """Retrains left ``running`` by a stopped agent (they run only on a local agent, one
        process: at its start none of them is still going)."""
        q = select(t.triggers).where(T.action == "retrain", T.state == "running").order_by(T.id)
        with self._read() as c:
            return [_trigger(r) for r in c.execute(q)]

    def retrain_interrupted(self, trigger_id: int, detail: dict, again: bool) -> int | None:
        """A retrain its agent's stop cut short: ``interrupted`` (audit ``trigger.done``), and
        with ``again`` a pending trigger of the same change that runs the notebook once more
        (audit ``trigger.retrain``, ``retry_of`` the first; the watch loop carries it out),
        in one transaction. The new trigger's id; None without one, or when the retrain was
        no longer running."""
        with self._tx() as c:
            r = c.execute(
                select(t.triggers).where(T.id == trigger_id, T.state == "running")
            ).first()
            if r is None:
                return None
            self._trigger_finished(c, trigger_id, "interrupted", detail)
            return self._retry(c, r) if again else None

    def _retry(self, c, r) -> int:
        """Trigger ``r`` (a row) owed once more, in the caller's transaction: a pending
        trigger of the same change and action, ``retry_of`` it (audit ``trigger.ACTION``);
        the watch loop's ``owed`` carries it out, on this agent or another replica."""
        retry = {"retry_of": r.id}
        tid = c.execute(
            t.triggers.insert().values(
                source_id=r.source_id,
                snapshot_id=r.snapshot_id,
                change=r.change,
                action=r.action,
                state="pending",
                detail=json.dumps(retry),
                time=now(),
            )
        ).inserted_primary_key[0]
        self._trigger_audit(
            c, tid, r.source_id, r.snapshot_id, r.change, r.action, "pending", retry
        )
        return tid

    def triggers_traced(self, source_id: int) -> list[dict]:
        """The source's triggers, oldest first, each with the fingerprint of the snapshot
        whose change set it off (None for an unreadable source's): its whole history."""
        q = (
            select(t.triggers, N.fingerprint)
            .select_from(t.triggers.outerjoin(t.source_snapshots, N.id == T.snapshot_id))
            .where(T.source_id == source_id)
            .order_by(T.id)
        )
        with self._read() as c:
            return [{**_trigger(r), "fingerprint": r.fingerprint} for r in c.execute(q)]

    def triggers_of(self, source_id: int | None = None) -> list[dict]:
        q = select(t.triggers)
        if source_id is not None:
            q = q.where(T.source_id == source_id)
        with self._read() as c:
            return [_trigger(r) for r in c.execute(q.order_by(T.id))]

    def errors_unsettled(self, source_id: int) -> list[dict]:
        """The source's error rows since its last good fingerprint, oldest first: how long it
        has been unreadable, and whether that was alerted yet."""
        with self._read() as c:
            last = c.execute(select(func.max(N.time)).where(N.source_id == source_id)).scalar()
            q = select(t.triggers).where(T.source_id == source_id, T.change == "error")
            if last is not None:
                q = q.where(T.time > last)
            return [_trigger(r) for r in c.execute(q.order_by(T.id))]

    def trigger_last(self, source_id: int) -> dict | None:
        with self._read() as c:
            q = select(t.triggers).where(T.source_id == source_id).order_by(T.id.desc()).limit(1)
            r = c.execute(q).first()
        return None if r is None else _trigger(r)

    # -- revalidations ---------------------------------------------------------------------

    def revalidation_add(
        self, trigger_id: int, version_id: int, row: dict, snap_id, detail: dict
    ) -> int | None:
        """A revalidation starts: its pending trigger running (with ``detail``), its row with
        the trigger's id, and their audit rows, in one transaction. None: the trigger was not
        pending (another agent started it)."""
        with self._tx() as c:
            if not self._trigger_start(c, trigger_id, "running", detail):
                return None
            rid = c.execute(
                t.revalidations.insert().values(
                    version_id=version_id,
                    trigger_id=trigger_id,
                    source_id=row["id"],
                    snapshot_id=snap_id,
                    target=row.get("target"),
                    state="running",
                    checks="[]",
                    detail="{}",
                    started=now(),
                )
            ).inserted_primary_key[0]
            self.audit_append(
                "watch",
                "revalidation.start",
                f"version:{version_id}",
                {"revalidation": rid, "trigger": trigger_id, "model": row["model"]},
            )
            return rid

    def revalidation_done(
        self, rid: int, trigger_id: int, state: str, verdict, checks: list, detail: dict
    ) -> None:
        """The revalidation's result, its trigger's state and their audit row, in one
        transaction."""
        with self._tx() as c:
            c.execute(
                t.revalidations.update()
                .where(R.id == rid)
                .values(
                    state=state,
                    verdict=verdict,
                    rows=detail.get("rows"),
                    checks=json.dumps(checks, sort_keys=True, default=str),
                    detail=json.dumps(detail, sort_keys=True, default=str),
                    finished=now(),
                )
            )
            summary = {"revalidation": rid, "verdict": verdict, **detail}
            self._trigger_finished(c, trigger_id, state, summary)

    def revalidations_interrupted(self, started_before: str | None = None) -> list[dict]:
        """Revalidations still ``running`` that no agent will finish are ``interrupted``, with
        their triggers, and owed once more (``_retry``, in the same transaction): every one
        (a local agent starting: it is the only process) or those started before
        ``started_before`` (past the time a live one is allowed, so its replica died). A
        re-run cut short again is not run a third time (``owed_again``, as a retrain's).
        Each one marked: its revalidation, trigger, the error and the retry's id (or None)."""
        q = select(R.id, R.trigger_id).where(R.state == "running")
        if started_before is not None:
            q = q.where(R.started < started_before)
        with self._read() as c:
            rows = list(c.execute(q))
        out = []
        for rid, tid in rows:
            with self._tx() as c:  # a replica may have marked it meanwhile: once only
                r = c.execute(select(t.triggers).where(T.id == tid)).first()
                again = r is not None and owed_again(loads(r.detail) or {})
                why = "it runs once more" if again else "it ran once again already"
                detail = {"ok": False, "error": f"the agent running it stopped first; {why}"}
                if not c.execute(
                    t.revalidations.update()
                    .where(R.id == rid, R.state == "running")
                    .values(state="interrupted", detail=json.dumps(detail), finished=now())
                ).rowcount:
                    continue
                new = None
                if r is not None:
                    self._trigger_finished(c, tid, "interrupted", {"revalidation": rid, **detail})
                    new = self._retry(c, r) if again else None
                out.append({"revalidation": rid, "trigger": tid, **detail, "again": new})
        return out

    def revalidations_of(self, version_id: int) -> list[dict]:
        with self._read() as c:
            q = select(t.revalidations).where(R.version_id == version_id).order_by(R.id)
            return [
                {**as_dict(r), "checks": loads(r.checks) or [], "detail": loads(r.detail) or {}}
                for r in c.execute(q)
            ]

    def versions_with_manifests(self, model: str | None = None) -> list[dict]:
        """Every version's model, number, stage, status and manifest (lineage reads the
        provenance's ``triggered_by``)."""
        q = select(V.id, V.model, V.number, V.stage, V.status, V.digest, V.manifest, V.origin)
        if model is not None:
            q = q.where(V.model == model)
        with self._read() as c:
            return [
                {**as_dict(r), "manifest": loads(r.manifest) or {}, "origin": loads(r.origin)}
                for r in c.execute(q.order_by(V.model, V.number))
            ]

    def dataset_links(self) -> list[dict]:
        """Every (dataset fingerprint, role, version) the pushes recorded."""
        lin = t.lineage.c
        q = (
            select(lin.dataset, lin.role, V.model, V.number, V.stage)
            .join(t.versions, V.id == lin.version_id)
            .where(lin.dataset.is_not(None))
            .order_by(V.model, V.number)
        )
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]
