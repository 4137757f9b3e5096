# ruff: noqa
"""Built tests/agent/data/home-v5/registry.db with the code of commit a5f5c01 (schema m001-m005,
sqlite-utils). Kept for the record: it no longer runs against the store; the .db is the fixture."""

import sys
from pathlib import Path

from handoff_agent import audit, outbox, tokens, trust_admin
from handoff_agent.gate import GatePolicy
from handoff_agent.policy import Policy
from handoff_agent.registry import Registry
from handoff_agent.stages import StageManager

home = Path(sys.argv[1])
home.mkdir(parents=True, exist_ok=True)
r = Registry(home / "registry.db")
db = r.db
audit.lifecycle_start(db, {"role": "central", "agent_id": "legacy", "pid": 1})


def manifest(i):
    return {
        "name": "churn",
        "flavor": "sklearn",
        "task": "classification",
        "serialization": "skops",
        "signature": {"inputs": [{"name": "x", "type": "double"}]},
        "params": {"C": i},
        "message": f"v{i}",
        "tags": {"team": "risk"},
        "provenance": {
            "notebook": "nb.ipynb",
            "cell_hash": f"h{i}",
            "environment": {"python": "3.11"},
        },
        "data": {
            "test": {"fingerprint": f"fp{i}", "schema": {"x": "double"}, "rows": 10, "stats": {}}
        },
    }


gate = GatePolicy()
fwd = lambda verdict: ["central"] if verdict["verdict"] in ("pass", "warn") else []
for i in (1, 2, 3):
    v, _ = r.create_version(
        "churn", f"{i:064x}", 100 + i, manifest(i), "alice", ["loads", "performance"]
    )
    vid = r.version_id("churn", v["number"])
    for run in r.queued_checks():
        if run["number"] != v["number"]:
            continue
        r.start_check(run["id"])
        res = (
            {"metrics": {"primary_metric": "accuracy", "accuracy": 0.8 + i / 100}}
            if run["check_name"] == "performance"
            else {}
        )
        r.finish_check(run["id"], "pass" if i != 2 else "fail", "ok", res, 0.5, gate.verdict, fwd)
    r.add_reports(vid, {"html": f"{i + 10:064x}", "json": f"{i + 20:064x}"})
# a version without checks, and a forced forward
r.create_version(
    "other", "f" * 64, 7, {"name": "other", "serialization": "pickle"}, "bob", [], gate.verdict, fwd
)
with db.atomic():
    outbox.enqueue(db, r.version_id("churn", 2), "webhook", forced_by="alice")
rows = outbox.due(db, 10**12)
outbox.set_body(db, rows[0]["id"], "e" * 64)
outbox.delivered(
    db, rows[0], {"name": "churn", "version": 1, "audit_anchor": {"seq": 3, "hash": "a" * 64}}
)
outbox.retry(db, rows[1], "central is down", 5.0)
outbox.dead(db, rows[2], "no such destination")
tok = tokens.create(db, "rita", ["reviewer"])
tokens.create(db, "adam", ["admin", "analyst"])
tokens.revoke(db, "adam")
trust_admin.add(db, ["sklearn.linear_model.LogisticRegression", "mypkg.Model"], "adam")
trust_admin.remove(db, ["mypkg.Model"], "adam")
policy = Policy.load(None) if False else None
import tempfile

from handoff_agent.policy import Policy

pf = Path(tempfile.mkdtemp()) / "policy.toml"
pf.write_text(
    '[intake]\nsecrets = ["'
    + ""
    + __import__("secrets").token_hex(16)
    + ""
    + '"]\n[stages.approved]\nreviewer = 1\n'
)
stages = StageManager(db, Policy.load(pf))
v1 = r.version_id("churn", 1)
with db.atomic():
    db.execute(
        "update versions set origin = ? where id = ?",
        [
            audit.canonical(
                {
                    "source": "src1",
                    "version": 1,
                    "delivery": "d" * 32,
                    "sender": "s",
                    "claimed_by": "alice",
                }
            ),
            v1,
        ],
    )
    db["deliveries"].insert(
        {
            "delivery_id": "d" * 32,
            "source": "src1",
            "version_id": v1,
            "received": audit.now(),
            "body_digest": "b" * 64,
        }
    )
    db["sources"].insert(
        {"source": "src1", "seq": 4, "hash": "c" * 64, "delivery_id": "d" * 32, "time": audit.now()}
    )
stages.enter(v1, "received", "central", "churn:1")
stages.enter(v1, "validated", "central", "churn:1", "central checks: pass")
print(stages.sign("churn", 1, {"user": "rita", "roles": ["reviewer"]}, "approve", "looks good"))
v3 = r.version_id("churn", 3)
with db.atomic():
    trust_admin.hold(db, v3, ["mypkg.Other"], "pass")
stages.enter(v3, "needs_trust", "central", "churn:3", "waiting")
audit.lifecycle_stop(db, {"role": "central", "agent_id": "legacy", "pid": 1})
print("audit bad:", r.verify_audit(), audit.head(db))
for t in db.table_names():
    print(t, db[t].count)
r.close()
