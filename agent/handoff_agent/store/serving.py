"""The model server's rows: which version serves in which slot, feedback labels, and the
prediction log's segments. Slot changes come only from ``serving.deploy.DeploymentService``,
inside the transaction of the stage change that caused them, with their audit row."""

from __future__ import annotations

import json

from sqlalchemy import delete, exists, func, select

from ..errors import Conflict
from . import tables as t
from ._util import as_dict, now
from .base import StoreBase

P = t.deployments.c
F = t.feedback.c
L = t.prediction_segments.c
V = t.versions.c
S = t.serving_stats.c
G = t.guardrail_events.c


class ServingStore(StoreBase):
    # -- slots ----------------------------------------------------------------------------

    def slots_of(self, model: str | None = None) -> list[dict]:
        """Every slot row (of one model, or of all), with the version's digest and manifest
        signature, ordered by model and slot."""
        q = select(
            P.model, P.slot, P.version_id, P.number, P.traffic, P.since, P.by, V.digest
        ).join(t.versions, V.id == P.version_id)
        if model is not None:
            q = q.where(P.model == model)
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q.order_by(P.model, P.slot))]

    def newest_in_stage(self, model: str, stage: str) -> dict | None:
        """The model's newest version in ``stage``: its ``version_id`` and ``number``."""
        with self._read() as c:
            r = c.execute(
                select(V.id, V.number)
                .where(V.model == model, V.stage == stage)
                .order_by(V.number.desc())
                .limit(1)
            ).first()
        return {"version_id": r.id, "number": r.number} if r else None

    def unslotted(self) -> list[dict]:
        """Versions in production or canary of a model with no slot at all: a home from
        before the model server (m007) kept their stages and had no slots. A model that has
        slots is served as they say: a start never moves its traffic."""
        q = (
            select(V.model, V.id.label("version_id"), V.number, V.stage)
            .where(V.stage.in_(("production", "canary")))
            .where(~exists().where(P.model == V.model))
            .order_by(V.model, V.number)
        )
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]

    def displaced_canaries(self) -> list[dict]:
        """Versions in stage canary that no canary slot holds, of a model that has slots:
        an older build let a second canary take the first one's slot and left it there."""
        q = (
            select(V.model, V.id.label("version_id"), V.number)
            .where(V.stage == "canary")
            .where(exists().where(P.model == V.model))
            .where(~exists().where(P.model == V.model, P.slot == "canary", P.number == V.number))
            .order_by(V.model, V.number)
        )
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]

    def slot_state(self) -> str:
        """Changes whenever any slot does: model servers poll this (cheap) before reloading."""
        with self._read() as c:
            rows = c.execute(select(P.model, P.slot, P.number, P.traffic).order_by(P.model, P.slot))
            return json.dumps([list(r) for r in rows])

    def slot_set(
        self, model: str, slot: str, version_id: int, number: int, traffic: float, by: str
    ) -> None:
        """Put a version in a slot (replacing what was there), with its audit row."""
        with self._tx() as c:
            values = {
                "version_id": version_id,
                "number": number,
                "traffic": float(traffic),
                "since": now(),
                "by": by,
            }
            stmt = self._insert(t.deployments).values(model=model, slot=slot, **values)
            # An upsert: two replicas filling one slot at once leave one row, never an error.
            c.execute(stmt.on_conflict_do_update(index_elements=["model", "slot"], set_=values))
            self.audit_append(
                by, "deploy.slot", f"{model}:{number}", {"slot": slot, "traffic": traffic}
            )

    def slot_clear(self, model: str, slot: str, by: str, why: str = "") -> int | None:
        """Empty a slot; returns the version number that was there, if any."""
        with self._tx() as c:
            row = c.execute(
                select(P.number).where(P.model == model, P.slot == slot).with_for_update()
            ).first()
            if row is None:
                return None
            c.execute(delete(t.deployments).where(P.model == model, P.slot == slot))
            self.audit_append(
                by, "deploy.clear", f"{model}:{row[0]}", {"slot": slot, "comment": why}
            )
            return row[0]

    def slot_traffic(
        self, model: str, slot: str, traffic: float, by: str, expected: float | None = None
    ) -> bool:
        """Set a slot's share; with ``expected``, only while the share is still that (the
        guardrails' step: of two replicas stepping at once, one moves it)."""
        with self._tx() as c:
            q = t.deployments.update().where(P.model == model, P.slot == slot)
            if expected is not None:
                q = q.where(P.traffic == float(expected))
            n = c.execute(q.values(traffic=float(traffic), since=now(), by=by)).rowcount
            if n:
                self.audit_append(by, "deploy.traffic", model, {"slot": slot, "traffic": traffic})
            return bool(n)

    # -- feedback -------------------------------------------------------------------------

    def feedback_add(
        self, model: str, labels: list[tuple[str, object]], by: str, admin: bool = False
    ) -> int:
        """Ground-truth labels by request id; a label sent again replaces the first, when
        the same user (or an admin) sends it: another's is a Conflict, nothing stored."""
        with self._tx() as c:
            if not admin:
                ids = [request_id for request_id, _ in labels]
                theirs = c.execute(
                    select(F.request_id, F.by).where(
                        F.model == model, F.request_id.in_(ids), F.by != by
                    )
                ).first()
                if theirs is not None:
                    raise Conflict(
                        f"Request {theirs.request_id} of {model!r} was labelled by "
                        f"{theirs.by}; only they or an admin may replace the label.",
                        "Send labels only for the requests your application made.",
                        code="labelled_by_another",
                    )
            time_ = now()
            for request_id, label in labels:
                stmt = self._insert(t.feedback).values(
                    model=model, request_id=request_id, label=json.dumps(label), time=time_, by=by
                )
                c.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["model", "request_id"],
                        set_={"label": stmt.excluded.label, "time": time_, "by": by},
                    )
                )
            self.audit_append(by, "feedback.add", model, {"labels": len(labels)})
            return len(labels)

    def feedback_since(self, after: int, limit: int = 10_000) -> list[dict]:
        """Labels stored after id ``after`` (every model), oldest first: each replica joins
        those of the requests it served."""
        with self._read() as c:
            rows = c.execute(
                select(F.id, F.model, F.request_id, F.label)
                .where(F.id > after)
                .order_by(F.id)
                .limit(limit)
            )
            return [{**as_dict(r), "label": json.loads(r.label)} for r in rows]

    def feedback_last_id(self) -> int:
        with self._read() as c:
            return c.execute(select(func.coalesce(func.max(F.id), 0))).scalar_one()

    def feedback_of(self, model: str) -> list[dict]:
        with self._read() as c:
            rows = c.execute(
                select(F.request_id, F.label, F.time, F.by).where(F.model == model).order_by(F.id)
            )
            return [{**as_dict(r), "label": json.loads(r.label)} for r in rows]

    # -- prediction log -------------------------------------------------------------------

    def segment_add(self, model: str, digest: str, rows: int, size: int, first, last) -> None:
        with self._tx() as c:
            c.execute(
                t.prediction_segments.insert().values(
                    model=model,
                    digest=digest,
                    rows=rows,
                    bytes=size,
                    first_time=first,
                    last_time=last,
                    created=now(),
                )
            )

    def segments_of(self, model: str) -> list[dict]:
        with self._read() as c:
            q = select(
                L.id, L.digest, L.rows, L.bytes, L.first_time, L.last_time, L.created, L.quarantined
            )
            return [as_dict(r) for r in c.execute(q.where(L.model == model).order_by(L.id))]

    def segment_quarantine(self, model: str, segment: dict, reason: str) -> bool:
        """Mark a segment the monitor cannot read, with its audit row, in one transaction;
        False when it already was (another replica's run got there first). The row and its
        blob stay: fsck still names the blob, retention still drops it in turn."""
        with self._tx() as c:
            done = c.execute(
                t.prediction_segments.update()
                .where(L.id == segment["id"], L.quarantined.is_(None))
                .values(quarantined=reason)
            )
            if done.rowcount == 0:
                return False
            self.audit_append(
                "monitor",
                "monitor.segment_quarantined",
                model,
                {
                    "digest": segment["digest"],
                    "rows": segment["rows"],
                    "first_time": segment["first_time"],
                    "last_time": segment["last_time"],
                    "reason": reason,
                },
            )
            return True

    def segment_release(self, model: str, segment: dict, by: str) -> bool:
        """Lift a segment's quarantine (its blob was restored and reads again), with its audit
        row, in one transaction; False when it was not quarantined."""
        with self._tx() as c:
            done = c.execute(
                t.prediction_segments.update()
                .where(L.id == segment["id"], L.quarantined.is_not(None))
                .values(quarantined=None)
            )
            if done.rowcount == 0:
                return False
            self.audit_append(
                by,
                "monitor.segment_released",
                model,
                {
                    "digest": segment["digest"],
                    "rows": segment["rows"],
                    "was": segment["quarantined"],
                },
            )
            return True

    def segments_over(self, model: str, keep_bytes: int) -> list[dict]:
        """Drop the oldest segments until the model's log fits ``keep_bytes``; returns the
        dropped rows, whose blobs the caller deletes (after the commit: a crash between the
        two leaves an unlisted blob for fsck, never a listed missing one)."""
        with self._tx() as c:
            rows = c.execute(
                select(L.id, L.digest, L.bytes).where(L.model == model).order_by(L.id.desc())
            ).all()
            total, dropped = 0, []
            for r in rows:
                total += r.bytes
                if total > keep_bytes:
                    dropped.append(as_dict(r))
            if dropped:
                c.execute(delete(t.prediction_segments).where(L.id.in_([d["id"] for d in dropped])))
            return dropped

    # -- serving stats (every replica's, merged by the reader) -----------------------------

    def serving_stats_add(
        self, replica: str, slices: list[dict], keep_before: int | None = None
    ) -> None:
        """Add a replica's drained counters into its own rows: ``slices`` holds
        ``{model, version, slot, slice, stats}`` (``stats.WindowStats.to_dict``). Only this
        replica writes its rows, so read, add, write is safe. With ``keep_before``, rows of
        slices before it (any replica's) are dropped."""
        from ..serving.stats import WindowStats

        with self._tx() as c:
            for item in slices:
                key = {
                    "replica": replica,
                    "model": item["model"],
                    "version": int(item["version"]),
                    "slot": item["slot"],
                    "slice": int(item["slice"]),
                }
                where = [getattr(S, k) == v for k, v in key.items()]
                old = c.execute(select(S.stats).where(*where)).scalar()
                stats = WindowStats.from_dict(item["stats"])
                if old is not None:
                    stats.merge(WindowStats.from_dict(json.loads(old)))
                    c.execute(
                        t.serving_stats.update()
                        .where(*where)
                        .values(stats=json.dumps(stats.to_dict()))
                    )
                else:
                    c.execute(
                        t.serving_stats.insert().values(**key, stats=json.dumps(stats.to_dict()))
                    )
            if keep_before is not None:
                c.execute(delete(t.serving_stats).where(S.slice < keep_before))

    def serving_stats_of(self, model: str, since_slice: int) -> list[dict]:
        """Every replica's rows of ``model`` from slice ``since_slice`` on."""
        with self._read() as c:
            rows = c.execute(
                select(S.version, S.slot, S.slice, S.stats).where(
                    S.model == model, S.slice >= since_slice
                )
            )
            return [{**as_dict(r), "stats": json.loads(r.stats)} for r in rows]

    # -- guardrail decisions ----------------------------------------------------------------

    def guardrail_event_add(
        self,
        model: str,
        version: int,
        slot: str,
        state: str,
        percent: float,
        reason: str,
        decision: dict,
        replica: str,
    ) -> None:
        with self._tx() as c:
            c.execute(
                t.guardrail_events.insert().values(
                    model=model,
                    version=int(version),
                    slot=slot,
                    state=state,
                    percent=float(percent),
                    reason=reason,
                    decision=json.dumps(decision, default=str),
                    time=now(),
                    replica=replica,
                )
            )

    def guardrail_events_of(self, model: str, version: int | None = None) -> list[dict]:
        """The model's guardrail decisions (of one version), oldest first."""
        q = select(G.id, G.version, G.slot, G.state, G.percent, G.reason, G.decision, G.time).where(
            G.model == model
        )
        if version is not None:
            q = q.where(G.version == int(version))
        with self._read() as c:
            rows = c.execute(q.order_by(G.id))
            return [{**as_dict(r), "decision": json.loads(r.decision)} for r in rows]

    def guardrail_last(self, model: str, version: int, slot: str) -> dict | None:
        """The latest decision recorded for a version in a slot."""
        with self._read() as c:
            r = c.execute(
                select(G.state, G.percent, G.reason, G.decision, G.time)
                .where(G.model == model, G.version == int(version), G.slot == slot)
                .order_by(G.id.desc())
                .limit(1)
            ).first()
        return None if r is None else {**as_dict(r), "decision": json.loads(r.decision)}
