"""Registry schema, as recorded migrations. Add a migration; never edit an applied one."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("handoff")


@migrations()
def m001_initial(db: Database) -> None:
    db["models"].create({"name": str, "owner": str, "created": str, "next_version": int}, pk="name")
    db["versions"].create(
        {
            "id": int,
            "model": str,
            "number": int,
            "digest": str,
            "size": int,
            "flavor": str,
            "task": str,
            "serialization": str,
            "signature": str,  # JSON
            "params": str,  # JSON
            "metrics": str,  # JSON
            "manifest": str,  # JSON, as stored in the bundle
            "message": str,
            "tags": str,  # JSON
            "notebook": str,
            "cell_hash": str,
            "environment": str,  # JSON
            "pushed_by": str,
            "pushed_at": str,
            "status": str,  # pending | checking | passed | failed
        },
        pk="id",
        foreign_keys=[("model", "models", "name")],
    )
    db["versions"].create_index(["model", "number"], unique=True)
    db["versions"].create_index(["model", "digest"], unique=True)
    db["datasets"].create(
        {"fingerprint": str, "schema": str, "rows": int, "stats": str, "created": str},
        pk="fingerprint",
    )
    db["lineage"].create(
        {"id": int, "version_id": int, "dataset": str, "role": str, "parent_version_id": int},
        pk="id",
        foreign_keys=[("version_id", "versions", "id")],
    )
    db["lineage"].create_index(["version_id"])
    db["lineage"].create_index(["dataset"])
    db["check_runs"].create(
        {
            "id": int,
            "version_id": int,
            "check_name": str,
            "status": str,  # queued | running | pass | warn | fail | error | skip
            "message": str,
            "result": str,  # JSON
            "duration": float,
            "started": str,
            "finished": str,
        },
        pk="id",
        foreign_keys=[("version_id", "versions", "id")],
    )
    db["check_runs"].create_index(["version_id", "check_name"], unique=True)
    db["check_runs"].create_index(["status"])
    db["audit"].create(
        {
            "seq": int,
            "time": str,
            "actor": str,
            "action": str,
            "subject": str,
            "payload": str,
            "prev_hash": str,
            "hash": str,
        },
        pk="seq",
    )


@migrations()
def m002_verdicts_and_reports(db: Database) -> None:
    db["versions"].add_column("verdict", str)  # JSON: {"verdict", "reasons"}
    db["versions"].add_column("score", float)  # primary metric, higher is better
    db["reports"].create(
        {"id": int, "version_id": int, "kind": str, "digest": str, "created": str},
        pk="id",
        foreign_keys=[("version_id", "versions", "id")],
    )
    db["reports"].create_index(["version_id", "kind"], unique=True)


@migrations()
def m003_pipeline(db: Database) -> None:
    db["versions"].add_column("stage", str)  # central: current stage; local: mirrored
    db["versions"].add_column("origin", str)  # central: JSON {source, version, delivery}
    db["stages"].create(
        {"id": int, "version_id": int, "stage": str, "since": str, "by": str, "comment": str},
        pk="id",
        foreign_keys=[("version_id", "versions", "id")],
    )
    db["stages"].create_index(["version_id"])
    db["signoffs"].create(
        {
            "id": int,
            "version_id": int,
            "stage": str,
            "role": str,
            "user": str,
            "decision": str,
            "comment": str,
            "time": str,
        },
        pk="id",
        foreign_keys=[("version_id", "versions", "id")],
    )
    db["signoffs"].create_index(["version_id", "stage"])
    db["outbox"].create(
        {
            "id": int,
            "destination": str,
            "version_id": int,
            "delivery_id": str,
            "body_digest": str,
            "attempts": int,
            "next_try": float,
            "state": str,  # pending | delivered | dead
            "last_error": str,
            "forced_by": str,
            "remote": str,  # JSON: what the destination answered (e.g. central's version)
            "created": str,
            "delivered": str,
        },
        pk="id",
        foreign_keys=[("version_id", "versions", "id")],
    )
    db["outbox"].create_index(["delivery_id"], unique=True)
    db["outbox"].create_index(["destination", "version_id"], unique=True)
    db["outbox"].create_index(["state", "next_try"])
    db["tokens"].create(
        {"hash": str, "user": str, "roles": str, "created": str, "revoked": int}, pk="hash"
    )
    db["deliveries"].create(
        {"delivery_id": str, "source": str, "version_id": int, "received": str},
        pk="delivery_id",
    )
    db["sources"].create(
        {"id": int, "source": str, "seq": int, "hash": str, "delivery_id": str, "time": str},
        pk="id",
    )
    db["sources"].create_index(["source", "seq"])


@migrations()
def m004_delivery_body_digest(db: Database) -> None:
    # sha256 of a delivery's signed body: the same id with another body is a conflict.
    # Deliveries recorded before this have none, and are matched on their id alone.
    db["deliveries"].add_column("body_digest", str)


@migrations()
def m005_trust_list(db: Database) -> None:
    # Types an admin trusted beyond the default list (handoff_agent.trust).
    db["trust"].create({"type": str, "trusted_by": str, "time": str}, pk="type")
    db["versions"].add_column("needs_trust", str)  # JSON: the types central waits on
    # Central: versions held in needs_trust, and what to do once their types are trusted.
    db["trust_waits"].create(
        {"version_id": int, "types": str, "local_verdict": str, "since": str},
        pk="version_id",
        foreign_keys=[("version_id", "versions", "id")],
    )
