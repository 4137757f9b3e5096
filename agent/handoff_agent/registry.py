"""The registry: models, versions, datasets, lineage, check runs and audit, in SQLite.

Plain methods with plain arguments, so the HTTP handlers, the CLI and the tests share them.
Every change happens inside one ``db.atomic()`` transaction together with its audit row.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sqlite_utils import Database

from . import audit, outbox
from .audit import canonical, now
from .errors import NotFound
from .schema import migrations

JSON_COLUMNS = (
    "signature",
    "params",
    "metrics",
    "manifest",
    "tags",
    "environment",
    "verdict",
    "needs_trust",
)
VERDICT_STATUS = {"pass": "passed", "warn": "warned", "fail": "failed"}
LOWER_IS_BETTER = {"log_loss", "mae", "rmse"}


class Registry:
    def __init__(self, path: Path | str):
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        self.db = Database(conn)
        migrations.apply(self.db)

    def close(self) -> None:
        self.db.conn.close()

    # -- writes ---------------------------------------------------------------------------

    def _audit(self, actor: str, action: str, subject: str, payload: dict) -> None:
        audit.append(self.db, actor, action, subject, payload)

    def create_version(
        self,
        name: str,
        digest: str,
        size: int,
        manifest: dict,
        actor: str,
        checks: list[str],
        verdict_fn=None,
        forward_fn=None,
    ) -> tuple[dict, bool]:
        """Create the next version of ``name``, or return the one with the same bytes.

        Numbers come from ``models.next_version`` inside the transaction, so they have no gaps
        and never repeat, whatever the concurrency.
        """
        with self.db.atomic():
            existing = self.db.execute(
                "select number from versions where model = ? and digest = ?", [name, digest]
            ).fetchone()
            if existing:
                return self.get_version(name, existing[0]), False
            t = now()
            if not self.db.execute("select 1 from models where name = ?", [name]).fetchone():
                self.db["models"].insert(
                    {"name": name, "owner": actor, "created": t, "next_version": 1}
                )
            number = self.db.execute(
                "select next_version from models where name = ?", [name]
            ).fetchone()[0]
            self.db.execute("update models set next_version = ? where name = ?", [number + 1, name])
            prov = manifest.get("provenance", {})
            parent = self.db.execute(
                "select id from versions where model = ? order by number desc limit 1", [name]
            ).fetchone()
            version_id = (
                self.db["versions"]
                .insert(
                    {
                        "model": name,
                        "number": number,
                        "digest": digest,
                        "size": size,
                        "flavor": manifest.get("flavor"),
                        "task": manifest.get("task"),
                        "serialization": manifest.get("serialization"),
                        "signature": canonical(manifest.get("signature", {})),
                        "params": canonical(manifest.get("params", {})),
                        "metrics": canonical({}),
                        "manifest": canonical(manifest),
                        "message": manifest.get("message", ""),
                        "tags": canonical(manifest.get("tags", {})),
                        "notebook": prov.get("notebook"),
                        "cell_hash": prov.get("cell_hash"),
                        "environment": canonical(prov.get("environment", {})),
                        "pushed_by": actor,
                        "pushed_at": t,
                        "status": "checking" if checks else "pushed",
                    }
                )
                .last_pk
            )
            for role, fp in (manifest.get("data") or {}).items():
                self.db["datasets"].insert(
                    {
                        "fingerprint": fp["fingerprint"],
                        "schema": canonical(fp.get("schema", {})),
                        "rows": fp.get("rows"),
                        "stats": canonical(fp.get("stats", {})),
                        "created": t,
                    },
                    ignore=True,
                )
                self.db["lineage"].insert(
                    {
                        "version_id": version_id,
                        "dataset": fp["fingerprint"],
                        "role": role,
                        "parent_version_id": parent[0] if parent else None,
                    }
                )
            if not manifest.get("data") and parent:
                self.db["lineage"].insert(
                    {
                        "version_id": version_id,
                        "dataset": None,
                        "role": "parent",
                        "parent_version_id": parent[0],
                    }
                )
            for check in checks:
                self.db["check_runs"].insert(
                    {"version_id": version_id, "check_name": check, "status": "queued"}
                )
            self._audit(
                actor, "version.create", f"{name}:{number}", {"digest": digest, "size": size}
            )
            if not checks and verdict_fn is not None:
                # Nothing to wait for: the verdict (and any hand-off) come with the version.
                self._conclude(version_id, name, number, [], verdict_fn, forward_fn)
        return self.get_version(name, number), True

    def start_check(self, run_id: int) -> None:
        with self.db.atomic():
            self.db.execute(
                "update check_runs set status = 'running', started = ? where id = ?",
                [now(), run_id],
            )

    def finish_check(
        self,
        run_id: int,
        status: str,
        message: str,
        result: dict,
        duration: float,
        verdict_fn=None,
        forward_fn=None,
    ) -> dict:
        """Commit one check's result. When it is the version's last, ``verdict_fn(checks)``
        turns the results into the verdict, committed in the same transaction."""
        with self.db.atomic():
            self.db.execute(
                "update check_runs set status = ?, message = ?, result = ?, duration = ?,"
                " finished = ? where id = ?",
                [status, message, canonical(result), duration, now(), run_id],
            )
            version_id, check = self.db.execute(
                "select version_id, check_name from check_runs where id = ?", [run_id]
            ).fetchone()
            model, number = self.db.execute(
                "select model, number from versions where id = ?", [version_id]
            ).fetchone()
            out = {"model": model, "version": number, "version_id": version_id, "check": check}
            metrics = (result or {}).get("metrics") or {}
            if check == "performance" and metrics.get("primary_metric") in metrics:
                self._record_score(version_id, metrics)
            rows = list(
                self.db.query(
                    "select check_name as name, status, message from check_runs"
                    " where version_id = ?",
                    [version_id],
                )
            )
            if any(r["status"] in ("queued", "running") for r in rows):
                return out
            return {
                **out,
                **self._conclude(version_id, model, number, rows, verdict_fn, forward_fn),
            }

    def _conclude(self, version_id, model, number, rows, verdict_fn, forward_fn) -> dict:
        """Store the verdict. Call inside the transaction of the last check result."""
        if verdict_fn is None:
            from .gate import GatePolicy

            verdict_fn = GatePolicy().verdict
        verdict = verdict_fn(rows)
        vstatus = VERDICT_STATUS[verdict["verdict"]]
        self.db.execute(
            "update versions set status = ?, verdict = ? where id = ?",
            [vstatus, canonical(verdict), version_id],
        )
        self._audit("agent", "version.verdict", f"{model}:{number}", verdict)
        # The outbox rows share the verdict's transaction: no verdict without its hand-off.
        for destination in forward_fn(verdict) if forward_fn else []:
            outbox.enqueue(self.db, version_id, destination)
        return {"verdict": verdict, "status": vstatus}

    def _record_score(self, version_id: int, metrics: dict) -> None:
        primary = metrics["primary_metric"]
        value = metrics[primary]
        if isinstance(value, (int, float)):
            score = -value if primary in LOWER_IS_BETTER else value
            self.db.execute(
                "update versions set score = ?, metrics = ? where id = ?",
                [score, canonical(metrics), version_id],
            )

    def champion(self, name: str, before: int = 2**62) -> dict | None:
        """The version a new one must beat: the one in production if there is one, else
        the best earlier version that passed."""
        row = self.db.execute(
            "select number, digest from versions where model = ? and number < ?"
            " and (stage = 'production' or status in ('passed', 'warned'))"
            " order by stage is not 'production', score is null, score desc, number desc"
            " limit 1",
            [name, before],
        ).fetchone()
        return {"number": row[0], "digest": row[1]} if row else None

    def manifest_of(self, name: str, number: int) -> dict | None:
        row = self.db.execute(
            "select manifest from versions where model = ? and number = ?", [name, number]
        ).fetchone()
        return json.loads(row[0]) if row else None

    def add_reports(self, version_id: int, digests: dict[str, str]) -> None:
        with self.db.atomic():
            for kind, digest in digests.items():
                self.db.execute(
                    "insert into reports (version_id, kind, digest, created) values (?, ?, ?, ?)"
                    " on conflict (version_id, kind) do update set digest = excluded.digest,"
                    " created = excluded.created",
                    [version_id, kind, digest, now()],
                )

    def report_digest(self, name: str, number: int, kind: str) -> str | None:
        row = self.db.execute(
            "select r.digest from reports r join versions v on v.id = r.version_id"
            " where v.model = ? and v.number = ? and r.kind = ?",
            [name, number, kind],
        ).fetchone()
        return row[0] if row else None

    def requeue_interrupted(self) -> int:
        """Checks that were running when the agent died run again."""
        with self.db.atomic():
            cur = self.db.execute(
                "update check_runs set status = 'queued', started = null where status = 'running'"
            )
            return cur.rowcount

    # -- reads ----------------------------------------------------------------------------

    def list_models(self) -> list[dict]:
        return list(
            self.db.query(
                "select m.name, m.owner, m.created, m.next_version - 1 as versions,"
                " (select status from versions v where v.model = m.name"
                "  order by number desc limit 1) as latest_status"
                " from models m order by m.name"
            )
        )

    def list_versions(
        self, name: str, limit: int = 100, before: int | None = None, digest: str | None = None
    ) -> list[dict]:
        if not self.db.execute("select 1 from models where name = ?", [name]).fetchone():
            raise NotFound(f"No model named {name!r}.", "List models with GET /api/v1/models.")
        cols = (
            "model, number, digest, size, flavor, task, message, pushed_by, pushed_at, status,"
            " stage, needs_trust, verdict,"
            " (select s.by from stages s where s.version_id = versions.id"
            " order by s.id desc limit 1) as stage_by"
        )
        if digest is not None:  # served by the unique (model, digest) index
            rows = self.db.query(
                f"select {cols} from versions where model = ? and digest = ?", [name, digest]
            )
        else:
            rows = self.db.query(
                f"select {cols} from versions where model = ? and number < ?"
                " order by number desc limit ?",
                [name, before or 2**62, limit],
            )
        return [
            {
                **r,
                "verdict": json.loads(r["verdict"]) if r["verdict"] else None,
                "needs_trust": json.loads(r["needs_trust"]) if r["needs_trust"] else None,
            }
            for r in rows
        ]

    def _version_row(self, name: str, number: int) -> dict:
        row = next(
            self.db.query("select * from versions where model = ? and number = ?", [name, number]),
            None,
        )
        if row is None:
            raise NotFound(
                f"Model {name!r} has no version {number}.",
                f"List its versions with GET /api/v1/models/{name}/versions.",
            )
        return row

    def get_version(self, name: str, number: int) -> dict:
        row = self._version_row(name, number)
        for col in JSON_COLUMNS:
            row[col] = json.loads(row[col]) if row[col] else None
        vid = row.pop("id")
        row["lineage"] = list(
            self.db.query(
                "select l.role, l.dataset, d.rows, p.model as parent_model,"
                " p.number as parent_number from lineage l"
                " left join datasets d on d.fingerprint = l.dataset"
                " left join versions p on p.id = l.parent_version_id"
                " where l.version_id = ? order by l.id",
                [vid],
            )
        )
        row["checks"] = self.checks_for(vid)
        row["stages"] = list(
            self.db.query(
                "select stage, since, by, comment from stages where version_id = ? order by id",
                [vid],
            )
        )
        row["signoffs"] = list(
            self.db.query(
                "select stage, role, user, decision, comment, time from signoffs"
                " where version_id = ? order by id",
                [vid],
            )
        )
        row["forwards"] = outbox.for_version(self.db, vid)
        row["origin"] = json.loads(row["origin"]) if row.get("origin") else None
        row["reports"] = sorted(
            r[0] for r in self.db.execute("select kind from reports where version_id = ?", [vid])
        )
        row.pop("score", None)
        return row

    def lineage_of_dataset(self, fingerprint: str) -> dict:
        """Which versions used this data, in which role, and where they are now."""
        rows = list(
            self.db.query(
                "select v.model, v.number, l.role, v.status, v.stage, v.pushed_by, v.pushed_at"
                " from lineage l join versions v on v.id = l.version_id where l.dataset = ?"
                " order by v.model, v.number",
                [fingerprint],
            )
        )
        info = next(
            self.db.query("select * from datasets where fingerprint = ?", [fingerprint]), None
        )
        if info is None:
            raise NotFound(f"No version used a dataset with fingerprint {fingerprint[:16]}….")
        info["schema"] = json.loads(info["schema"])
        info.pop("stats", None)
        return {"dataset": info, "versions": rows}

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

    def version_id(self, name: str, number: int) -> int:
        return self._version_row(name, number)["id"]

    def checks_for(self, version_id: int) -> list[dict]:
        out = []
        for r in self.db.query(
            "select check_name as name, status, message, result, duration, started, finished"
            " from check_runs where version_id = ? order by id",
            [version_id],
        ):
            r["result"] = json.loads(r["result"]) if r["result"] else None
            out.append(r)
        return out

    def queued_checks(self) -> list[dict]:
        return list(
            self.db.query(
                "select c.id, c.check_name, v.model, v.number, v.digest from check_runs c"
                " join versions v on v.id = c.version_id where c.status = 'queued' order by c.id"
            )
        )

    def digests(self) -> dict[str, list[str]]:
        """Every digest the registry refers to, with who refers to it."""
        out: dict[str, list[str]] = {}
        for model, number, digest in self.db.execute("select model, number, digest from versions"):
            out.setdefault(digest, []).append(f"{model}:{number}")
        for model, number, kind, digest in self.db.execute(
            "select v.model, v.number, r.kind, r.digest from reports r"
            " join versions v on v.id = r.version_id"
        ):
            out.setdefault(digest, []).append(f"{model}:{number} {kind} report")
        return out

    def verify_audit(self) -> int | None:
        """Return the seq of the first audit row whose hash chain breaks, or None."""
        return audit.first_bad(self.db)
