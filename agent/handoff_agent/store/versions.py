"""Models, versions, datasets, lineage, check runs and reports.

Version numbers come from ``models.next_version``, read under a row lock (``FOR UPDATE`` on
PostgreSQL, BEGIN IMMEDIATE on SQLite) in the transaction that creates the version: no gaps,
no repeats, and the same bytes pushed twice at once still make one version.
"""

from __future__ import annotations

import json
import time

from sqlalchemy import case, func, or_, select, update

from ..errors import BadRequest, NotFound
from ..vocabulary import CHECK_RUN_STATES, VERDICT_STATUS, stage_text
from . import tables as t
from ._util import as_dict, canonical, loads, now
from .base import StoreBase

JSON_COLUMNS = (
    "signature",
    "params",
    "metrics",
    "manifest",
    "tags",
    "environment",
    "verdict",
    "needs_trust",
    "provisional",
)
V = t.versions.c
_R, _SEG, _W, _REF = (
    t.reports.c,
    t.prediction_segments.c,
    t.validations.c,
    t.monitor_references.c,
)
CENTRAL = "central"  # the destination whose answer names the version's number there
# Seconds a claim on a check run holds unless its replica renews it (``renew_checks``); the
# agent's ``check_lease`` sets it. Past it, any replica runs the check again.
CHECK_LEASE = 60.0


def _claimed_by(owner: str | None):
    """The run is ``owner``'s (None: claimed by no one, as before claims existed)."""
    r = t.check_runs.c
    return r.claimed_by.is_(None) if owner is None else r.claimed_by == owner


def _at_central(forward: dict) -> bool:
    return forward["destination"] == CENTRAL and forward["state"] == "delivered"


def _central_version(remote: dict | None) -> int | None:
    """The number central gave a delivered version (its answer names it); None before."""
    version = remote.get("version") if isinstance(remote, dict) else None
    return int(version) if version is not None else None


# For each table of ``tables.BLOB_REFERENCES``: who refers to a blob (the query, its last
# column the reference) and in what words. A pruned bundle is gone by design.
REFERRERS = {
    "versions": (
        select(V.model, V.number, V.digest).where(V.pruned.is_(None)),
        lambda model, number: f"{model}:{number}",
    ),
    "reports": (
        select(V.model, V.number, _R.kind, _R.digest).join(t.versions, V.id == _R.version_id),
        lambda model, number, kind: f"{model}:{number} {kind} report",
    ),
    "prediction_segments": (
        select(_SEG.model, _SEG.digest),
        lambda model: f"{model} prediction log",
    ),
    "validations": (
        select(_W.model, _W.number, _W.onnx).where(_W.onnx.is_not(None)),
        lambda model, number: f"{model}:{number} ONNX graph",
    ),
    "monitor_references": (
        select(_REF.model, _REF.digest),
        lambda model: f"{model} monitoring reference",
    ),
}


class VersionStore(StoreBase):
    # -- writes ---------------------------------------------------------------------------

    def insert_version(
        self,
        name: str,
        digest: str,
        size: int,
        manifest: dict,
        actor: str,
        checks: list[str],
        status: str = "pushed",
    ) -> tuple[int, int, bool]:
        """Create the next version of ``name`` (or find the one with the same bytes), with its
        lineage, queued check runs and audit row, in ``status`` (the version service's
        choice). Returns (version id, number, created)."""
        with self._tx() as c:
            t_ = now()
            c.execute(
                self._insert(t.models)
                .values(name=name, owner=actor, created=t_, next_version=1)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            # The lock orders concurrent pushes of one model; the digest check below then
            # sees whatever the winner committed.
            number = c.execute(
                select(t.models.c.next_version).where(t.models.c.name == name).with_for_update()
            ).scalar_one()
            existing = c.execute(
                select(V.id, V.number).where(V.model == name, V.digest == digest)
            ).first()
            if existing:
                return existing.id, existing.number, False
            c.execute(
                update(t.models).where(t.models.c.name == name).values(next_version=number + 1)
            )
            prov = manifest.get("provenance", {})
            parent = c.execute(
                select(V.id).where(V.model == name).order_by(V.number.desc()).limit(1)
            ).scalar()
            version_id = c.execute(
                t.versions.insert()
                .values(
                    model=name,
                    number=number,
                    digest=digest,
                    size=size,
                    flavor=manifest.get("flavor"),
                    task=manifest.get("task"),
                    serialization=manifest.get("serialization"),
                    signature=canonical(manifest.get("signature", {})),
                    params=canonical(manifest.get("params", {})),
                    metrics=canonical({}),
                    manifest=canonical(manifest),
                    message=manifest.get("message", ""),
                    tags=canonical(manifest.get("tags", {})),
                    notebook=prov.get("notebook"),
                    cell_hash=prov.get("cell_hash"),
                    environment=canonical(prov.get("environment", {})),
                    pushed_by=actor,
                    pushed_at=t_,
                    status=status,
                )
                .returning(V.id)
            ).scalar_one()
            for role, fp in (manifest.get("data") or {}).items():
                c.execute(
                    self._insert(t.datasets)
                    .values(
                        fingerprint=fp["fingerprint"],
                        schema=canonical(fp.get("schema", {})),
                        rows=fp.get("rows"),
                        stats=canonical(fp.get("stats", {})),
                        created=t_,
                    )
                    .on_conflict_do_nothing(index_elements=["fingerprint"])
                )
                c.execute(
                    t.lineage.insert().values(
                        version_id=version_id,
                        dataset=fp["fingerprint"],
                        role=role,
                        parent_version_id=parent,
                    )
                )
            if not manifest.get("data") and parent:
                c.execute(
                    t.lineage.insert().values(
                        version_id=version_id, dataset=None, role="parent", parent_version_id=parent
                    )
                )
            self.queue_checks(version_id, checks)
            self.audit_append(
                actor, "version.create", f"{name}:{number}", {"digest": digest, "size": size}
            )
            return version_id, number, True

    def insert_versions_bulk(
        self, name: str, items: list[tuple[str, int, dict]], actor: str
    ) -> list[int]:
        """Create many versions of ``name`` at once, ``(digest, size, manifest)`` each, with
        their parent lineage and audit rows, in one transaction of a few multi-row statements:
        imports and benchmarks (100k versions in seconds, not one round trip each). No checks
        are queued; a digest the model already has is refused (unique index). Returns the
        numbers given, in order."""
        if not items:
            return []
        with self._tx() as c:
            t_ = now()
            c.execute(
                self._insert(t.models)
                .values(name=name, owner=actor, created=t_, next_version=1)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            first = c.execute(
                select(t.models.c.next_version).where(t.models.c.name == name).with_for_update()
            ).scalar_one()
            numbers = list(range(first, first + len(items)))
            c.execute(
                update(t.models)
                .where(t.models.c.name == name)
                .values(next_version=first + len(items))
            )
            parent = c.execute(
                select(V.id).where(V.model == name).order_by(V.number.desc()).limit(1)
            ).scalar()
            c.execute(
                t.versions.insert(),
                [
                    {
                        "model": name,
                        "number": n,
                        "digest": digest,
                        "size": size,
                        "flavor": m.get("flavor"),
                        "task": m.get("task"),
                        "serialization": m.get("serialization"),
                        "signature": canonical(m.get("signature", {})),
                        "params": canonical(m.get("params", {})),
                        "metrics": canonical({}),
                        "manifest": canonical(m),
                        "message": m.get("message", ""),
                        "tags": canonical(m.get("tags", {})),
                        "notebook": p.get("notebook"),
                        "cell_hash": p.get("cell_hash"),
                        "environment": canonical(p.get("environment", {})),
                        "pushed_by": actor,
                        "pushed_at": t_,
                        "status": "pushed",
                    }
                    for n, (digest, size, m), p in zip(
                        numbers,
                        items,
                        [(m.get("provenance") or {}) for _d, _s, m in items],
                        strict=True,
                    )
                ],
            )
            ids = dict(
                c.execute(select(V.number, V.id).where(V.model == name, V.number >= first)).all()
            )
            lineage = []
            for n in numbers:
                if parent is not None:
                    lineage.append(
                        {"version_id": ids[n], "dataset": None, "role": "parent",
                         "parent_version_id": parent}
                    )  # fmt: skip
                parent = ids[n]
            if lineage:
                c.execute(t.lineage.insert(), lineage)
            self.audit_append_many(
                actor,
                "version.create",
                [
                    (f"{name}:{n}", {"digest": digest, "size": size})
                    for n, (digest, size, _m) in zip(numbers, items, strict=True)
                ],
            )
            return numbers

    def queue_checks(self, version_id: int, checks: list[str]) -> None:
        """Queue check runs (a check already queued or run for the version is left alone)."""
        if not checks:
            return
        rows = [
            {"version_id": version_id, "check_name": check, "status": "queued"} for check in checks
        ]
        with self._tx() as c:  # one statement for all of them, not one each
            c.execute(
                self._insert(t.check_runs).on_conflict_do_nothing(
                    index_elements=["version_id", "check_name"]
                ),
                rows,
            )

    def set_version(self, version_id: int, **values) -> None:
        """Update columns of one version (JSON values are stored canonically)."""
        values = {
            k: canonical(v) if k in (*JSON_COLUMNS, "origin") and v is not None else v
            for k, v in values.items()
        }
        with self._tx() as c:
            c.execute(update(t.versions).where(V.id == version_id).values(**values))

    def claim_check(self, run_id: int, owner: str | None = None) -> bool:
        """Move a queued run to running. False when it is not queued, or not ``owner``'s
        (another replica took it over when this one's claim lapsed)."""
        r = t.check_runs.c
        with self._tx() as c:
            res = c.execute(
                update(t.check_runs)
                .where(r.id == run_id, r.status == "queued", _claimed_by(owner))
                .values(status="running", started=now())
            )
            return res.rowcount == 1

    start_check = claim_check

    def record_check(
        self,
        run_id: int,
        status: str,
        message: str,
        result: dict,
        duration: float,
        owner: str | None = None,
    ) -> tuple[dict, list[dict]] | None:
        """Store one result. Returns the run's version and every run of that version
        (name, status, message) as committed with it; None, and nothing stored, when the
        run is finished already or no longer ``owner``'s (its claim lapsed and another
        replica took it over: only that one's result counts).

        The version's row is locked first: checks of one version finish at once in parallel
        workers (or replicas), and each must see the others' results, or no one would
        conclude the verdict."""
        r = t.check_runs.c
        with self._tx() as c:
            row = c.execute(
                select(r.version_id, r.check_name, V.model, V.number)
                .join(t.versions, V.id == r.version_id)
                .where(r.id == run_id)
            ).one()
            c.execute(select(V.id).where(V.id == row.version_id).with_for_update())
            res = c.execute(
                update(t.check_runs)
                .where(r.id == run_id, r.status.in_(CHECK_RUN_STATES), _claimed_by(owner))
                .values(
                    status=status,
                    message=message,
                    result=canonical(result),
                    duration=duration,
                    finished=now(),
                    claimed_until=None,
                )
            )
            if res.rowcount != 1:
                return None
            out = {
                "model": row.model,
                "version": row.number,
                "version_id": row.version_id,
                "check": row.check_name,
            }
            runs = [
                as_dict(x)
                for x in c.execute(
                    select(r.check_name.label("name"), r.status, r.message).where(
                        r.version_id == row.version_id
                    )
                )
            ]
            return out, runs

    def set_provisional(self, version_id: int, verdict: dict) -> bool:
        """Record a checking version's provisional verdict, once: False when it has one
        already or is no longer checking."""
        with self._tx() as c:
            res = c.execute(
                update(t.versions)
                .where(V.id == version_id, V.provisional.is_(None), V.status == "checking")
                .values(provisional=canonical(verdict))
            )
            return res.rowcount == 1

    def set_score(self, version_id: int, score: float, metrics: dict) -> None:
        self.set_version(version_id, score=score, metrics=metrics)

    def best_version(
        self, name: str, before: int = 2**62, *, stage: str | None = None, statuses=()
    ) -> dict | None:
        """The highest-scored earlier version of ``name`` in ``stage`` or with one of
        ``statuses`` (unscored last, then the newest). Which ones count is the caller's rule
        (``VersionService.champion``)."""
        where = [V.model == name, V.number < before, V.pruned.is_(None)]
        if stage is not None:
            where.append(V.stage == stage)
        if statuses:
            where.append(V.status.in_(tuple(statuses)))
        q = (
            select(V.number, V.digest)
            .where(*where)
            .order_by(
                case((V.score.is_(None), 1), else_=0),
                V.score.desc(),
                V.number.desc(),
            )
            .limit(1)
        )
        with self._read() as c:
            row = c.execute(q).first()
        return {"number": row[0], "digest": row[1]} if row else None

    def manifest_of(self, name: str, number: int) -> dict | None:
        with self._read() as c:
            value = c.execute(
                select(V.manifest).where(V.model == name, V.number == number)
            ).scalar()
        return loads(value)

    def add_reports(self, version_id: int, digests: dict[str, str]) -> list[str]:
        """Record a version's reports. Returns the digests of those they replace (a report
        is written again once central validates) that no report names now, for the caller
        to remove after the commit: a report names its version, so only reports refer to
        its bytes, and a stop in between leaves an orphan fsck notes."""
        r = t.reports.c
        with self._tx() as c:
            old = c.execute(select(r.kind, r.digest).where(r.version_id == version_id)).all()
            for kind, digest in digests.items():
                stmt = self._insert(t.reports).values(
                    version_id=version_id, kind=kind, digest=digest, created=now()
                )
                c.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["version_id", "kind"],
                        set_={"digest": stmt.excluded.digest, "created": stmt.excluded.created},
                    )
                )
            replaced = {d for kind, d in old if digests.get(kind, d) != d}
            if replaced:
                replaced -= set(c.execute(select(r.digest).where(r.digest.in_(replaced))).scalars())
            return sorted(replaced)

    def report_digest(self, name: str, number: int, kind: str) -> str | None:
        r = t.reports.c
        with self._read() as c:
            return c.execute(
                select(r.digest)
                .join(t.versions, V.id == r.version_id)
                .where(V.model == name, V.number == number, r.kind == kind)
            ).scalar()

    def requeue_interrupted(self, owner: str) -> int:
        """Checks this agent had claimed or was running when it died run again (rows from
        before claims existed count as its own)."""
        r = t.check_runs.c
        with self._tx() as c:
            res = c.execute(
                update(t.check_runs)
                .where(
                    r.status.in_(("queued", "running")),
                    or_(r.claimed_by == owner, r.claimed_by.is_(None)),
                )
                .values(status="queued", started=None, claimed_by=None, claimed_until=None)
            )
            return res.rowcount

    def unconcluded(self, received: bool) -> list[dict]:
        """Versions with a final verdict whose conclusion may not have run (the agent was
        killed, or the blob store down, between the verdict's commit and its reports and
        stage): at central (``received``) those still in stage ``received`` (a version
        central concluded without checks of its own has no report, and needs none); on a
        local agent those with no report. Each with its model, number, id and verdict."""
        r = t.reports.c
        no_report = ~select(r.id).where(r.version_id == V.id).exists()
        undone = V.stage == "received" if received else no_report
        q = select(V.model, V.number, V.id, V.verdict).where(
            V.verdict.is_not(None), V.status.in_(tuple(VERDICT_STATUS.values())), undone
        )
        with self._read() as c:
            rows = c.execute(q.order_by(V.id))
            return [{**as_dict(x), "verdict": loads(x.verdict)} for x in rows]

    def claim_checks(
        self, owner: str, lease: float = CHECK_LEASE, mine: tuple[int, ...] = ()
    ) -> list[dict]:
        """Take, for ``lease`` seconds, the queued runs nobody runs yet and the unfinished
        runs whose claim lapsed (their replica died, or stalled past its lease), which run
        again from the start (``SKIP LOCKED`` on PostgreSQL): replicas sharing a database
        never run one check twice at once, and none holds one forever. ``mine``: runs this
        process runs now (its claims lapsed only while it could not renew them). A run
        taken over is audited, and returned with ``taken_from``, the replica that held it."""
        r = t.check_runs.c
        at = time.time()
        free = (r.status == "queued") & r.claimed_by.is_(None)
        lapsed = r.status.in_(CHECK_RUN_STATES) & r.claimed_by.is_not(None) & (r.claimed_until < at)
        if mine:
            lapsed = lapsed & r.id.not_in(list(mine))
        with self._tx() as c:
            found = c.execute(
                select(r.id, r.claimed_by, r.status)
                .where(or_(free, lapsed))
                .order_by(r.id)
                .with_for_update(skip_locked=True)
            ).all()
            if not found:
                return []
            ids = [x.id for x in found]
            c.execute(
                update(t.check_runs)
                .where(r.id.in_(ids))
                .values(claimed_by=owner, claimed_until=at + lease)
            )
            taken = {x.id: x for x in found if x.claimed_by is not None}
            if taken:  # from the start: its worker, and its start time, died with its owner
                c.execute(
                    update(t.check_runs)
                    .where(r.id.in_(list(taken)))
                    .values(status="queued", started=None)
                )
            q = (
                select(r.id, r.check_name, V.model, V.number, V.digest)
                .join(t.versions, V.id == r.version_id)
                .where(r.id.in_(ids))
                .order_by(r.id)
            )
            runs = [as_dict(x) for x in c.execute(q)]
            for x in runs:
                if x["id"] in taken:
                    x["taken_from"] = taken[x["id"]].claimed_by
            if taken:
                self.audit_append_many(
                    "agent",
                    "check.reclaimed",
                    [
                        (
                            f"{x['model']}:{x['number']}",
                            {
                                "check": x["check_name"],
                                "from": taken[x["id"]].claimed_by,
                                "by": owner,
                                "was": taken[x["id"]].status,
                            },
                        )
                        for x in runs
                        if x["id"] in taken
                    ],
                )
            return runs

    def renew_checks(self, owner: str, ids, lease: float = CHECK_LEASE) -> int:
        """Extend ``owner``'s claims on the unfinished runs ``ids`` (the ones this process
        runs) by ``lease`` seconds from now, in one statement. Returns how many it still
        held; a run another replica took over is left to it."""
        if not ids:
            return 0
        r = t.check_runs.c
        with self._tx() as c:
            return c.execute(
                update(t.check_runs)
                .where(
                    r.id.in_(list(ids)),
                    r.claimed_by == owner,
                    r.status.in_(CHECK_RUN_STATES),
                )
                .values(claimed_until=time.time() + lease)
            ).rowcount

    # -- reads ----------------------------------------------------------------------------

    def list_models(self, limit: int | None = None, after: str | None = None) -> list[dict]:
        """Models by name, each with its latest version's status: one query, never one per
        model. Numbers have no gaps, so the latest is ``next_version - 1``: a join on the
        unique (model, number) index. ``limit``/``after``: a page, keyed by name."""
        m = t.models.c
        latest = (V.model == m.name) & (V.number == m.next_version - 1)
        q = (
            select(
                m.name,
                m.owner,
                m.created,
                (m.next_version - 1).label("versions"),
                V.status.label("latest_status"),
            )
            .select_from(t.models.outerjoin(t.versions, latest))
            .order_by(m.name)
        )
        if after is not None:
            q = q.where(m.name > after)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as c:
            return [as_dict(r) for r in c.execute(q)]

    def list_versions(
        self, name: str, limit: int = 100, before: int | None = None, digest: str | None = None
    ) -> list[dict]:
        s = t.stages.c

        def last_stage(col):
            return (
                select(col).where(s.version_id == V.id).order_by(s.id.desc()).limit(1)
            ).scalar_subquery()

        cols = [
            *(
                V[k]
                for k in [
                    "id",
                    "model",
                    "number",
                    "digest",
                    "size",
                    "flavor",
                    "task",
                    "message",
                    "pushed_by",
                    "pushed_at",
                    "status",
                    "stage",
                    "needs_trust",
                    "verdict",
                    "provisional",
                    "pruned",
                ]
            ),
            last_stage(s.by).label("stage_by"),
            last_stage(s.comment).label("stage_comment"),  # a rejection's reason
        ]
        if digest is not None:  # served by the unique (model, digest) index
            q = select(*cols).where(V.model == name, V.digest == digest)
        else:
            q = (
                select(*cols)
                .where(V.model == name, V.number < (before or 2**62))
                .order_by(V.number.desc())
                .limit(limit)
            )
        with self._read() as c:
            rows = [as_dict(r) for r in c.execute(q)]
            m = t.models.c
            known = rows or c.execute(select(m.name).where(m.name == name)).first()
            if not known:
                raise NotFound(f"No model named {name!r}.", "List models with GET /api/v1/models.")
            signed = self._signoffs_of_versions(c, [r["id"] for r in rows])
        forwards = self.outbox_for_versions([r["id"] for r in rows])
        for r in rows:
            vid = r.pop("id")
            mine = forwards.get(vid, [])
            at_central = [f["remote"] for f in mine if _at_central(f)]
            r.update(
                verdict=loads(r["verdict"]),
                needs_trust=loads(r["needs_trust"]),
                provisional=loads(r["provisional"]),
                central_version=_central_version(at_central[0] if at_central else None),
                undelivered=[
                    {k: f[k] for k in ("destination", "state", "last_error")}
                    for f in mine
                    if f["state"] != "delivered"
                ],
                signoffs=signed.get(vid, []),
                stage_text=stage_text(r),
            )
        return rows

    @staticmethod
    def _signoffs_of_versions(c, ids: list[int]) -> dict[int, list[dict]]:
        """Each listed version's sign-offs, oldest first, in one query (the panel shows who
        signed, their decision and comment under each version)."""
        if not ids:
            return {}
        g = t.signoffs.c
        out: dict[int, list[dict]] = {}
        q = (
            select(g.version_id, g.stage, g.role, g.user, g.decision, g.comment, g.time)
            .where(g.version_id.in_(ids))
            .order_by(g.id)
        )
        for row in c.execute(q):
            d = as_dict(row)
            out.setdefault(d.pop("version_id"), []).append(d)
        return out

    def _version_row(self, c, name: str, number: int) -> dict:
        row = c.execute(select(t.versions).where(V.model == name, V.number == number)).first()
        if row is None:
            raise NotFound(
                f"Model {name!r} has no version {number}.",
                f"List its versions with GET /api/v1/models/{name}/versions.",
            )
        return as_dict(row)

    def get_version(self, name: str, number: int) -> dict:
        with self._read() as c:
            row = self._version_row(c, name, number)
            for col in JSON_COLUMNS:
                row[col] = loads(row[col])
            vid = row.pop("id")
            lin, d = t.lineage.c, t.datasets.c
            p = t.versions.alias("p")
            row["lineage"] = [
                as_dict(r)
                for r in c.execute(
                    select(
                        lin.role,
                        lin.dataset,
                        d.rows,
                        p.c.model.label("parent_model"),
                        p.c.number.label("parent_number"),
                    )
                    .select_from(
                        t.lineage.outerjoin(t.datasets, d.fingerprint == lin.dataset).outerjoin(
                            p, p.c.id == lin.parent_version_id
                        )
                    )
                    .where(lin.version_id == vid)
                    .order_by(lin.id)
                )
            ]
            row["checks"] = self.checks_for(vid)
            row["stages"] = self.stage_history(vid)
            row["signoffs"] = self.signoffs_of(vid)
            row["stage_text"] = stage_text(row)
            row["forwards"] = self.outbox_for_version(vid)
            delivered = [f["remote"] for f in row["forwards"] if _at_central(f)]
            row["central_version"] = _central_version(delivered[0] if delivered else None)
            row["origin"] = loads(row.get("origin"))
            r = t.reports.c
            row["reports"] = sorted(c.execute(select(r.kind).where(r.version_id == vid)).scalars())
            row["validation"] = self.validation_of(vid)  # central's, once validated
        row.pop("score", None)
        return row

    def lineage_of_dataset(self, fingerprint: str) -> dict:
        """Which versions used this data, in which role, and where they are now.
        ``fingerprint`` may be the first digits of one, as reports show it."""
        d = t.datasets.c
        with self._read() as c:
            found = c.execute(
                select(d.fingerprint).where(d.fingerprint.startswith(fingerprint)).limit(2)
            ).scalars()
            found = list(found)
        if len(found) > 1:
            raise BadRequest(
                f"{fingerprint} begins more than one dataset's fingerprint.", "Give more digits."
            )
        fingerprint = found[0] if found else fingerprint
        lin = t.lineage.c
        q = (
            select(V.model, V.number, lin.role, V.status, V.stage, V.pushed_by, V.pushed_at)
            .join(t.versions, V.id == lin.version_id)
            .where(lin.dataset == fingerprint)
            .order_by(V.model, V.number)
        )
        with self._read() as c:
            rows = [as_dict(r) for r in c.execute(q)]
            info = c.execute(
                select(t.datasets).where(t.datasets.c.fingerprint == fingerprint)
            ).first()
        if info is None:
            raise NotFound(f"No version used a dataset with fingerprint {fingerprint[:16]}….")
        info = as_dict(info)
        info["schema"] = json.loads(info["schema"])
        info.pop("stats", None)
        return {"dataset": info, "versions": rows}

    def version_stage(self, version_id: int) -> str | None:
        with self._read() as c:
            return c.execute(select(V.stage).where(V.id == version_id)).scalar()

    def version_id(self, name: str, number: int) -> int:
        with self._read() as c:
            return self._version_row(c, name, number)["id"]

    def checks_for(self, version_id: int) -> list[dict]:
        r = t.check_runs.c
        q = (
            select(
                r.check_name.label("name"),
                r.status,
                r.message,
                r.result,
                r.duration,
                r.started,
                r.finished,
            )
            .where(r.version_id == version_id)
            .order_by(r.id)
        )
        with self._read() as c:
            return [{**as_dict(x), "result": loads(x.result)} for x in c.execute(q)]

    def queued_checks(self) -> list[dict]:
        r = t.check_runs.c
        q = (
            select(r.id, r.check_name, V.model, V.number, V.digest)
            .join(t.versions, V.id == r.version_id)
            .where(r.status == "queued")
            .order_by(r.id)
        )
        with self._read() as c:
            return [as_dict(x) for x in c.execute(q)]

    def digests(self, only: str | None = None) -> dict[str, list[str]]:
        """Every digest the registry refers to (``tables.BLOB_REFERENCES``), with who refers
        to it; ``only``: that one digest's referrers (the same rule, asked for one blob)."""
        out: dict[str, list[str]] = {}
        with self._read() as c:
            for column in t.BLOB_REFERENCES:
                query, says = REFERRERS[column.table.name]
                if only is not None:
                    query = query.where(column == only)
                for *who, digest in c.execute(query):
                    out.setdefault(digest, []).append(says(*who))
        return out

    def count_rows(self) -> dict[str, int]:
        """Rows per table: what a backup or a migration must carry over."""
        with self._read() as c:
            return {
                name: c.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in t.metadata.tables.items()
            }

    def lineage_of_version(self, name: str, number: int) -> dict:
        """A version's data, notebook and code identity, parent and stage history."""
        v = self.get_version(name, number)
        prov = (v.get("manifest") or {}).get("provenance") or {}
        parent = next((r for r in v["lineage"] if r.get("parent_number")), None)
        return {
            "name": name,
            "version": number,
            "data": [r for r in v["lineage"] if r.get("dataset")],
            "notebook": prov.get("notebook"),
            "cell_hash": prov.get("cell_hash"),
            "git": prov.get("git"),
            "environment": prov.get("environment"),
            "parent": {"name": parent["parent_model"], "version": parent["parent_number"]}
            if parent
            else None,
            "stage": v.get("stage"),
            "needs_trust": v.get("needs_trust"),
            "stages": v["stages"],
            "forwards": v["forwards"],
        }
