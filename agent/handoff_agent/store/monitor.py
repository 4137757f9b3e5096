"""Monitoring's rows: closed windows as time series, alerts with their actions, each model's
reference, and labels imported with their own arrival times (a backfill)."""

from __future__ import annotations

import json

from sqlalchemy import and_, exists, func, or_, select, union

from . import tables as t
from ._util import as_dict, canonical, loads, now
from .base import StoreBase

W = t.monitor_windows.c
A = t.alerts.c
R = t.monitor_references.c


class MonitorStore(StoreBase):
    # -- windows --------------------------------------------------------------------------

    def window_put(self, model: str, kind: str, start: float, end: float, row: dict) -> None:
        """Store (or replace) a window's numbers; a window re-evaluated for late labels keeps
        one row."""
        values = {
            "end": end,
            "status": row["status"],
            "reason": row.get("reason") or "",
            "labels": row.get("labels") or "none",
            "metrics": canonical(row.get("metrics") or {}),
            "computed": now(),
        }
        with self._tx() as c:
            stmt = self._insert(t.monitor_windows).values(
                model=model, kind=kind, start=start, **values
            )
            c.execute(
                stmt.on_conflict_do_update(index_elements=["model", "kind", "start"], set_=values)
            )

    def windows_of(
        self, model: str, kind: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[dict]:
        q = select(W.kind, W.start, W.end, W.status, W.reason, W.labels, W.metrics, W.computed)
        q = q.where(W.model == model)
        if kind:
            q = q.where(W.kind == kind)
        if since is not None:  # the rolling window (keyed at start 0) by when it ends
            q = q.where(or_(W.start >= since, and_(W.kind == "rolling", W.end >= since)))
        q = q.order_by(W.kind, W.start.desc()).limit(limit)
        with self._read() as c:
            rows = [as_dict(r) for r in c.execute(q)]
        for r in rows:
            r["metrics"] = loads(r["metrics"]) or {}
            if r["kind"] == "rolling":  # its start is its run's, kept in metrics, not 1970
                r["start"] = r["metrics"].get("start", r["start"])
        return sorted(rows, key=lambda r: (r["kind"], r["start"]))

    def windows_before(self, model: str, kind: str, before: float, limit: int) -> list[dict]:
        """The ``limit`` latest windows of ``kind`` that started before ``before``, oldest
        first (alert hysteresis counts runs of them); on the (model, kind, start) index."""
        q = (
            select(W.kind, W.start, W.end, W.status, W.reason, W.labels, W.metrics)
            .where(W.model == model, W.kind == kind, W.start < before)
            .order_by(W.start.desc())
            .limit(limit)
        )
        with self._read() as c:
            rows = [as_dict(r) for r in c.execute(q)]
        for r in rows:
            r["metrics"] = loads(r["metrics"]) or {}
        return rows[::-1]

    def window_starts(self, model: str, kind: str) -> dict[float, tuple[str, str]]:
        """start → (labels state, when computed) of the model's stored windows of ``kind``."""
        with self._read() as c:
            rows = c.execute(
                select(W.start, W.labels, W.computed).where(W.model == model, W.kind == kind)
            ).all()
        return {float(r.start): (r.labels, r.computed) for r in rows}

    # -- alerts ---------------------------------------------------------------------------

    def alert_open(self, model: str, kind: str, window: str) -> dict | None:
        with self._read() as c:
            row = c.execute(
                select(t.alerts).where(
                    A.model == model, A.kind == kind, A.window == window, A.state == "firing"
                )
            ).first()
        return as_dict(row) if row else None

    def alert_fire(self, model: str, kind: str, window: str, start: float, **values) -> dict | None:
        """A new firing alert with its audit row, in one transaction; None when one of the
        model's ``kind`` alerts on ``window`` already fires (another replica's run fired it
        since this one looked: the audit chain's head, locked first, orders the two)."""
        with self._tx() as c:
            self.audit_lock(c)
            firing = c.execute(
                select(A.id).where(
                    A.model == model, A.kind == kind, A.window == window, A.state == "firing"
                )
            ).first()
            if firing is not None:
                return None
            aid = c.execute(
                t.alerts.insert()
                .values(
                    model=model,
                    kind=kind,
                    window=window,
                    state="firing",
                    fired_window=start,
                    fired=now(),
                    **values,
                )
                .returning(A.id)
            ).scalar_one()
            row = as_dict(c.execute(select(t.alerts).where(A.id == aid)).one())
            self.audit_append(
                "monitor",
                "monitor.alert",
                model,
                {
                    "alert": aid,
                    "kind": kind,
                    "window": window,
                    "start": start,
                    "value": values.get("value"),
                    "threshold": values.get("threshold"),
                    "action": values.get("action"),
                },
            )
            return row

    def alert_outcome(self, alert_id: int, outcome: str) -> None:
        with self._tx() as c:
            c.execute(t.alerts.update().where(A.id == alert_id).values(outcome=outcome))

    def alert_clear(self, alert_id: int, start: float, value: float | None) -> dict | None:
        """Clear a firing alert, with its audit row; None when it no longer fires (another
        replica cleared it first)."""
        with self._tx() as c:
            done = c.execute(
                t.alerts.update()
                .where(A.id == alert_id, A.state == "firing")
                .values(state="cleared", cleared_window=start, cleared=now())
            )
            if done.rowcount == 0:
                return None
            row = as_dict(c.execute(select(t.alerts).where(A.id == alert_id)).one())
            self.audit_append(
                "monitor",
                "monitor.alert_cleared",
                row["model"],
                {
                    "alert": alert_id,
                    "kind": row["kind"],
                    "window": row["window"],
                    "start": start,
                    "value": value,
                },
            )
            return row

    def alerts_of(self, model: str, state: str | None = None, limit: int = 1000) -> list[dict]:
        q = select(t.alerts).where(A.model == model)
        if state:
            q = q.where(A.state == state)
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q.order_by(A.id.desc()).limit(limit))]

    def alerts_firing_count(self) -> dict[str, int]:
        """model → firing alerts (the notebook's and the panel's badges)."""
        with self._read() as c:
            rows = c.execute(select(A.model).where(A.state == "firing")).scalars().all()
        out: dict[str, int] = {}
        for m in rows:
            out[m] = out.get(m, 0) + 1
        return out

    def firing_alerts(self, models: list[str] | None = None) -> dict[str, list[dict]]:
        """model → its firing alerts (kind, window, window start, message): the models
        list's badges, in one query for a page of models."""
        q = select(A.model, A.kind, A.window, A.fired_window, A.message).where(A.state == "firing")
        if models is not None:
            q = q.where(A.model.in_(models))
        out: dict[str, list[dict]] = {}
        with self._read() as c:
            for r in c.execute(q.order_by(A.id)):
                row = as_dict(r)
                out.setdefault(row.pop("model"), []).append(row)
        return out

    def retrain_request(self, model: str, alert_id: int, reason: str) -> dict:
        """The retrain an alert asks for: an audit row ``monitor.retrain_requested`` that the
        data-trigger side consumes (it runs the registered retraining notebook)."""
        return self.audit_append(
            "monitor", "monitor.retrain_requested", model, {"alert": alert_id, "reason": reason}
        )

    def rollback_withheld(self, model: str, alert_id: int, reason: str, measured: list) -> dict:
        """An alert's rollback not done, and why (the window measured an imported log's
        version 0, or a version not in production): an audit row
        ``monitor.rollback_withheld``, so the log says why nothing moved."""
        return self.audit_append(
            "monitor",
            "monitor.rollback_withheld",
            model,
            {"alert": alert_id, "measured": [int(v) for v in measured], "reason": reason},
        )

    # -- references and backfilled labels --------------------------------------------------

    def reference_set(self, model: str, digest: str, rows: int, by: str) -> None:
        values = {"digest": digest, "rows": rows, "time": now(), "by": by}
        with self._tx() as c:
            stmt = self._insert(t.monitor_references).values(model=model, **values)
            c.execute(stmt.on_conflict_do_update(index_elements=["model"], set_=values))
            self.audit_append(by, "monitor.reference", model, {"digest": digest, "rows": rows})

    def reference_of(self, model: str) -> dict | None:
        with self._read() as c:
            row = c.execute(select(t.monitor_references).where(R.model == model)).first()
        return as_dict(row) if row else None

    def feedback_import(self, model: str, labels: list[tuple[str, object, str]], by: str) -> int:
        """Labels from another system with the time each arrived there (ISO), so a backfill
        keeps its label delay; a label sent again replaces the first."""
        with self._tx() as c:
            stmt = self._insert(t.feedback)
            stmt = stmt.on_conflict_do_update(
                index_elements=["model", "request_id"],
                set_={"label": stmt.excluded.label, "time": stmt.excluded.time},
            )
            rows = [
                {"model": model, "request_id": r, "label": json.dumps(lab), "time": when, "by": by}
                for r, lab, when in labels
            ]
            for i in range(0, len(rows), 20_000):  # executemany: one statement, many rows
                c.execute(stmt, rows[i : i + 20_000])
            self.audit_append(by, "feedback.import", model, {"labels": len(labels)})
            return len(labels)

    def labels_for(self, model: str, request_ids: list[str]) -> list[dict]:
        """The feedback of these requests: request_id, label (parsed), time."""
        F = t.feedback.c
        out = []
        with self._read() as c:
            for i in range(0, len(request_ids), 5000):
                chunk = request_ids[i : i + 5000]
                rows = c.execute(
                    select(F.request_id, F.label, F.time).where(
                        F.model == model, F.request_id.in_(chunk)
                    )
                ).all()
                out.extend(rows)
        labels = json.loads("[" + ",".join(r[1] for r in out) + "]") if out else []
        return [
            {"request_id": r[0], "label": lab, "time": r[2]}
            for r, lab in zip(out, labels, strict=True)
        ]

    def is_monitored(self, model: str) -> bool:
        """Whether ``model`` has a prediction log or a reference here (served or imported:
        a model can be monitored from an imported log without a version here)."""
        P = t.prediction_segments.c
        with self._read() as c:
            logged = c.execute(select(P.model).where(P.model == model).limit(1)).first()
            return (
                logged is not None
                or c.execute(select(R.model).where(R.model == model)).first() is not None
            )

    def imported_names(
        self, after: str | None = None, upto: str | None = None, limit: int | None = None
    ) -> list[str]:
        """Models monitored here that have no version here (a log or a reference imported
        with ``monitor import``: served elsewhere), by name, in ``(after, upto]``. The names
        in the log come by a skip scan of its (model, id) index, one seek per model, never
        a read of every segment, so a models page stays cheap however long the log."""
        P, m = t.prediction_segments.c, t.models.c
        seg = t.prediction_segments.alias("seg")
        low = after or ""
        walk = select(func.min(P.model).label("model")).where(P.model > low)
        walk = walk.cte("logged", recursive=True)
        step = select(
            select(func.min(seg.c.model)).where(seg.c.model > walk.c.model).scalar_subquery()
        ).where(walk.c.model.is_not(None))
        if upto is not None:
            step = step.where(walk.c.model < upto)
        walk = walk.union_all(step)

        def outside(col):
            q = col.is_not(None) & ~exists().where(m.name == col)
            return q & (col <= upto) if upto is not None else q

        logged = select(walk.c.model.label("name")).where(outside(walk.c.model))
        refs = select(R.model.label("name")).where(R.model > low, outside(R.model))
        q = union(logged, refs).order_by("name")
        if limit is not None:
            q = q.limit(limit)
        with self._read() as c:
            return list(c.execute(q).scalars())

    def models_page(self, limit: int, after: str | None = None, imported: bool = False):
        """A page of ``list_models``, with (``imported``: at central) the models known only
        from ``monitor import`` merged in by name, each ``imported: true``."""
        rows = [{**r, "imported": False} for r in self.list_models(limit, after)]
        if not imported:
            return rows
        upto = rows[-1]["name"] if len(rows) == limit else None
        extra = [
            {
                "name": n,
                "owner": None,
                "created": None,
                "versions": 0,
                "latest_status": None,
                "imported": True,
            }
            for n in self.imported_names(after, upto, limit)
        ]
        return sorted(rows + extra, key=lambda r: r["name"])[:limit]

    def monitored_models(self) -> list[str]:
        """Models with a prediction log (served here or imported)."""
        with self._read() as c:
            rows = c.execute(select(t.prediction_segments.c.model).distinct()).scalars()
            return sorted(rows)
