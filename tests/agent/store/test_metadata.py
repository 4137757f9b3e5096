"""The metadata store and fsck on their own, on each backend: numbering, idempotency, the
audit chain, store agreement."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from handoff_agent.errors import NotFound
from handoff_agent.fsck import fsck
from handoff_agent.store.blobs import open_blob_store
from handoff_agent.store.metadata import MetadataStore
from handoff_agent.versions import VersionService


class Registry:
    """The store with the version service's writes, as the agent wires them."""

    def __init__(self, store: MetadataStore):
        self.store, self.service = store, VersionService(store)

    def __getattr__(self, name):
        return getattr(self.store, name)

    def create_version(self, *args):
        return self.service.create_version(*args)

    def finish_check(self, *args):
        return self.service.finish_check(*args)

    def champion(self, *args, **kwargs):
        return self.service.champion(*args, **kwargs)

    def sql(self, statement: str, **params) -> list:
        """Raw SQL, as someone with the database's password could run it."""
        with self.store.engine.begin() as c:
            res = c.execute(text(statement), params)
            return res.fetchall() if res.returns_rows else []


def open_home(home) -> Registry:
    return Registry(MetadataStore.for_home(home))


def manifest(name: str, **extra) -> dict:
    return {
        "format_version": 1,
        "name": name,
        "serialization": "pickle",
        "flavor": "test",
        "files": {},
        **extra,
    }


def digest_of(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


@pytest.fixture
def reg(tmp_path, backend):
    r = Registry(MetadataStore.for_home(tmp_path, backend.database_url() or ""))
    yield r
    r.close()


def create(reg, name, content, checks=(), **extra):
    return reg.create_version(
        name, digest_of(content), len(content), manifest(name, **extra), "ana", list(checks)
    )


def test_versions_are_numbered_from_1_per_model(reg):
    assert [create(reg, "a", f"a{i}")[0]["number"] for i in range(3)] == [1, 2, 3]
    assert create(reg, "b", "b0")[0]["number"] == 1
    assert create(reg, "a", "a3")[0]["number"] == 4
    assert [m["versions"] for m in reg.list_models()] == [4, 1]


def test_same_digest_returns_the_existing_version(reg):
    v1, created1 = create(reg, "a", "x")
    v2, created2 = create(reg, "a", "x")
    assert (created1, created2) == (True, False)
    assert v1 == v2
    assert create(reg, "a", "y")[0]["number"] == 2
    # The same bytes under another name are that name's own version.
    v3, created3 = create(reg, "b", "x")
    assert created3 and v3["number"] == 1


def test_a_push_answer_without_the_whole_version_agrees_with_it(reg):
    """``full=False`` (a push's answer) leaves out eight queries, not the truth: the status
    and verdict it gives are the stored version's, checking or concluded at once."""
    from handoff_agent.gate import GatePolicy

    service = VersionService(reg.store, GatePolicy().verdict)
    for checks in (["loads"], []):
        light, created = service.create_version(
            "a", digest_of(str(checks)), 1, manifest("a"), "ana", checks, full=False
        )
        whole = reg.get_version("a", light["number"])
        assert created and light["status"] == whole["status"]
        assert light.get("verdict") == whole["verdict"]
    assert [reg.get_version("a", n)["status"] for n in (1, 2)] == ["checking", "passed"]


def test_version_fields_lineage_and_checks(reg):
    create(reg, "a", "parent")
    data = {"X": {"fingerprint": "d" * 64, "rows": 5}}
    v, _ = create(
        reg,
        "a",
        "child",
        checks=["loads", "schema"],
        data=data,
        message="hello",
        provenance={"notebook": "nb.ipynb", "cell_hash": "c1"},
    )
    assert v["number"] == 2
    assert v["status"] == "checking"
    assert v["message"] == "hello"
    assert v["notebook"] == "nb.ipynb"
    assert v["pushed_by"] == "ana"
    assert v["manifest"]["name"] == "a"
    assert v["lineage"] == [
        {"role": "X", "dataset": "d" * 64, "rows": 5, "parent_model": "a", "parent_number": 1}
    ]
    assert [(c["name"], c["status"]) for c in v["checks"]] == [
        ("loads", "queued"),
        ("schema", "queued"),
    ]
    assert len(reg.queued_checks()) == 2
    v3, _ = create(reg, "a", "grandchild")
    assert v3["status"] == "pushed"
    assert v3["lineage"] == [
        {"role": "parent", "dataset": None, "rows": None, "parent_model": "a", "parent_number": 2}
    ]


def test_check_results_roll_the_status_forward(reg):
    create(reg, "a", "x", checks=["loads", "smoke"])  # both block the gate by default
    runs = reg.queued_checks()
    reg.start_check(runs[0]["id"])
    reg.finish_check(runs[0]["id"], "pass", "", {}, 0.1)
    assert reg.get_version("a", 1)["status"] == "checking"
    reg.start_check(runs[1]["id"])
    assert reg.requeue_interrupted("this-agent") == 1
    reg.finish_check(runs[1]["id"], "fail", "bad", {}, 0.1)
    version = reg.get_version("a", 1)
    assert version["status"] == "failed"
    assert version["verdict"] == {"verdict": "fail", "reasons": ["smoke: bad"]}
    assert reg.verify_audit() is None


def test_list_versions_paging_and_not_found(reg):
    for i in range(5):
        create(reg, "a", f"v{i}")
    assert [v["number"] for v in reg.list_versions("a", 2)] == [5, 4]
    assert [v["number"] for v in reg.list_versions("a", 10, before=3)] == [2, 1]
    with pytest.raises(NotFound):
        reg.list_versions("nope")
    with pytest.raises(NotFound):
        reg.get_version("a", 6)


def test_audit_chain_verifies_and_names_a_tampered_row(reg):
    for i in range(4):
        create(reg, "a", f"v{i}")
    assert reg.verify_audit() is None
    seqs = [r[0] for r in reg.sql("select seq from audit order by seq")]
    assert seqs == [1, 2, 3, 4]
    reg.sql("update audit set payload = :p where seq = 3", p='{"digest":"forged"}')
    assert reg.verify_audit() == 3


def test_audit_chain_detects_a_deleted_row(reg):
    for i in range(4):
        create(reg, "a", f"v{i}")
    reg.sql("delete from audit where seq = 2")
    assert reg.verify_audit() == 3


def test_audit_chain_detects_a_rehashed_row(reg):
    # Rewriting a row and its own hash still breaks the link from the next row.
    from handoff_agent.audit import row_hash as audit_hash

    for i in range(3):
        create(reg, "a", f"v{i}")
    row = dict(reg.sql("select * from audit where seq = 2")[0]._mapping)
    row["actor"] = "mallory"
    new_hash = audit_hash(row["prev_hash"], row)
    reg.sql("update audit set actor = 'mallory', hash = :h where seq = 2", h=new_hash)
    assert reg.verify_audit() == 3


def test_audit_survives_reopen(tmp_path):
    r = open_home(tmp_path)
    create(r, "a", "x")
    r.close()
    r = open_home(tmp_path)  # migrations are not applied twice
    create(r, "a", "y")
    assert r.verify_audit() is None
    assert [v["number"] for v in r.list_versions("a")] == [2, 1]
    r.close()


# -- fsck ---------------------------------------------------------------------------------


def populate(home, n=3) -> list[str]:
    store = open_blob_store("", home)
    reg = open_home(home)
    digests = []
    try:
        for i in range(n):
            data = f"bundle {i}".encode() * 100
            d = store.put_bytes(data)
            reg.create_version("m", d, len(data), manifest("m"), "ana", [])
            digests.append(d)
    finally:
        reg.close()
    return digests


def run_fsck(home):
    return subprocess.run(
        [sys.executable, "-m", "handoff_agent", "fsck", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fsck_clean(tmp_path):
    home = tmp_path / "home"
    populate(home)
    report = fsck(home)
    assert report.ok and report.blobs == 3 and report.versions == 3
    p = run_fsck(home)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "fsck: OK" in p.stdout
    assert "3 blobs, 3 references checked" in p.stdout


def test_fsck_reports_a_corrupt_blob(tmp_path):
    home = tmp_path / "home"
    digests = populate(home)
    path = home / "blobs" / digests[1][:2] / digests[1][2:]
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[10] ^= 1
    path.write_bytes(bytes(data))
    assert fsck(home).corrupt == [digests[1]]
    p = run_fsck(home)
    assert p.returncode == 1
    assert f"CORRUPT blob {digests[1]}" in p.stdout
    assert "fsck: PROBLEMS FOUND" in p.stdout


def test_fsck_reports_a_missing_blob(tmp_path):
    home = tmp_path / "home"
    digests = populate(home)
    (home / "blobs" / digests[0][:2] / digests[0][2:]).unlink()
    p = run_fsck(home)
    assert p.returncode == 1
    assert f"MISSING blob {digests[0]} (m:1)" in p.stdout
    assert "fsck: PROBLEMS FOUND" in p.stdout


def test_fsck_reports_a_broken_audit_chain(tmp_path):
    home = tmp_path / "home"
    populate(home)
    reg = open_home(home)
    reg.sql("update audit set actor = 'mallory' where seq = 2")
    reg.close()
    p = run_fsck(home)
    assert p.returncode == 1
    assert "AUDIT chain breaks at entry 2" in p.stdout


def test_fsck_notes_orphans_and_partials_but_passes(tmp_path):
    home = tmp_path / "home"
    populate(home)
    store = open_blob_store("", home)
    orphan = store.put_bytes(b"committed but never registered")
    store.writer().write(b"half")  # never committed: a crash mid-upload
    p = run_fsck(home)  # both just written: in flight, as far as fsck can tell
    assert p.returncode == 0, p.stdout
    assert f"note: in flight: blob {orphan}" in p.stdout
    assert "note: in flight: upload upload-" in p.stdout
    assert "fsck: OK" in p.stdout
    old = time.time() - 2 * 86400  # two days later, nobody recorded them: interrupted
    for path in (home / "blobs" / orphan[:2] / orphan[2:], *(home / "tmp").glob("*.part")):
        os.utime(path, (old, old))
    p = run_fsck(home)
    assert p.returncode == 0, p.stdout
    assert f"unreferenced blob {orphan}" in p.stdout
    assert "partial upload upload-" in p.stdout and "in flight" not in p.stdout
    assert "fsck: OK" in p.stdout


def test_champion_is_production_else_the_best_that_passed(reg):
    for content, score in (("a", 0.7), ("b", 0.9), ("c", 0.8)):
        v, _ = create(reg, "m", content)
        reg.sql(
            "update versions set status = 'passed', score = :s where number = :n",
            s=score,
            n=v["number"],
        )
    assert reg.champion("m")["number"] == 2  # best score
    assert reg.champion("m", before=2)["number"] == 1  # only earlier versions count
    reg.sql("update versions set stage = 'production' where number = 3")
    assert reg.champion("m")["number"] == 3  # production wins over a better score
    assert reg.champion("other") is None


def test_a_run_without_stop_leaves_a_gap_for_its_own_agent_only(reg):
    a = {"role": "central", "agent_id": "replica-a", "pid": 1}
    b = {"role": "central", "agent_id": "replica-b", "pid": 2}
    assert [r["action"] for r in reg.lifecycle_start(a)] == ["agent.start"]
    # another replica starts while the first runs: no gap for either
    assert [r["action"] for r in reg.lifecycle_start(b)] == ["agent.start"]
    reg.lifecycle_stop(b)
    # the first was killed: its next start says so
    assert [r["action"] for r in reg.lifecycle_start(a)] == ["agent.gap", "agent.start"]
    assert reg.verify_audit() is None


def test_an_appended_event_wakes_a_listener_on_postgresql(reg):
    listener = reg.event_listener()
    if reg.backend != "postgresql":
        assert listener is None  # one SQLite file: no other replica to hear from
        return
    try:
        assert listener.wait(0) is False  # nothing appended yet
        reg.event_append("replica-b", {"type": "version", "model": "m"})
        assert listener.wait(30) is True  # NOTIFY, not the next poll
        listener.interrupt()  # stopping: a waiting tail returns at once
        assert listener.wait(30) is False
    finally:
        listener.close()
    # the table stays the source of truth
    assert reg.events_since(0, "replica-a")[1] == [{"type": "version", "model": "m"}]


def test_only_revalidations_older_than_the_cutoff_are_interrupted_once_and_owed_once(reg):
    """What a central replica does for one whose replica died: mark it interrupted, its
    trigger with it, and owe it once more as a pending retry, in one transaction each; a
    newer one (a live replica's) stays running; a retry cut short again is not owed again."""
    create(reg, "churn", "c1")
    vid = reg.version_id("churn", 1)
    spec = {"model": "churn", "kind": "file", "source": "/d.csv", "every": 60.0}
    src = reg.watch_add({**spec, "on": ["change"], "actions": ["revalidate"], "target": "y"}, "t")
    started = []
    for _ in range(2):
        tid = reg.trigger_add(src["id"], None, "appended", "revalidate", "pending", {})
        started.append((reg.revalidation_add(tid, vid, src, None, {"version": 1}), tid))
        assert reg.revalidation_add(tid, vid, src, None, {}) is None  # started once only
    (old, old_trigger), (new, _) = started
    reg.sql("UPDATE revalidations SET started = :t WHERE id = :id", t="2026-01-01T00:00:00", id=old)
    cutoff = "2026-06-01T00:00:00+00:00"
    [marked] = reg.revalidations_interrupted(cutoff)
    assert reg.revalidations_interrupted(cutoff) == []  # another replica, after it: nothing
    assert (marked["revalidation"], marked["trigger"]) == (old, old_trigger)
    error = "the agent running it stopped first; it runs once more"
    rows = {r["id"]: r for r in reg.revalidations_of(vid)}
    assert rows[old]["state"] == "interrupted" and rows[new]["state"] == "running"
    assert rows[old]["detail"]["error"] == error
    by_id = {t["id"]: t for t in reg.triggers_of(src["id"])}
    trigger, retry = by_id[old_trigger], by_id[marked["again"]]
    assert trigger["state"] == "interrupted" and trigger["detail"]["revalidation"] == old
    assert trigger["detail"]["error"] == error
    # the retry: the same change and action, pending, unclaimed (any replica's owed round)
    assert (retry["state"], retry["action"], retry["change"]) == (
        "pending",
        "revalidate",
        "appended",
    )
    assert retry["detail"] == {"retry_of": old_trigger}
    [done] = reg.sql("SELECT subject, payload FROM audit WHERE action = 'trigger.done'")
    assert done[0] == f"trigger:{old_trigger}"
    # the audit row names the watch, its model and source, and the version it was about
    payload = json.loads(done[1])
    keys = ("watch", "model", "source", "action", "state", "version")
    assert {k: payload[k] for k in keys} == {
        "watch": src["id"],
        "version": 1,
        "model": "churn",
        "source": "/d.csv",
        "action": "revalidate",
        "state": "interrupted",
    }
    # and the retry's own audit row, in the same transaction
    owed = reg.sql("SELECT payload FROM audit WHERE action = 'trigger.revalidate'")
    owed = [json.loads(r[0]) for r in owed]
    assert [(p["state"], p["retry_of"]) for p in owed if p["trigger"] == retry["id"]] == [
        ("pending", old_trigger)
    ]
    # the retry cut short too is interrupted, saying so, and not owed a third time
    again = reg.revalidation_add(retry["id"], vid, src, None, {"version": 1})
    reg.sql(
        "UPDATE revalidations SET started = :t WHERE id = :id", t="2026-01-01T00:00:00", id=again
    )
    [second] = reg.revalidations_interrupted(cutoff)
    assert second["again"] is None
    assert second["error"] == "the agent running it stopped first; it ran once again already"
    later = reg.triggers_of(src["id"])
    assert [t["state"] for t in later if t["id"] == retry["id"]] == ["interrupted"]
    assert [t for t in later if t["state"] == "pending"] == []
    assert reg.verify_audit() is None


def test_versions_in_stages_come_oldest_stage_change_first_with_their_signoffs(reg):
    """The review queue's read: one query for the versions, one for their sign-offs."""
    ids = [reg.version_id("m", create(reg, "m", c)[0]["number"]) for c in ("a", "b", "c")]
    for vid, stage in ((ids[1], "validated"), (ids[0], "validated"), (ids[2], "rejected")):
        reg.stage_set(vid, stage, "agent", "", f"m:{vid}")
    reg.signoff_add(ids[0], "approved", "reviewer", "bob", "approve", "ok", "m:1")
    rows = reg.in_stages(("validated", "approved"), 10)
    assert [r["number"] for r in rows] == [2, 1]  # 2 entered validated first
    assert [(s["stage"], s["user"]) for s in rows[1]["signoffs"]] == [("approved", "bob")]
    assert rows[0]["signoffs"] == [] and rows[0]["since"]
    assert [r["number"] for r in reg.in_stages(("validated",), 1)] == [2]
    assert reg.in_stages(("canary",), 10) == []


def test_a_delivered_body_is_kept_only_while_something_still_needs_its_bytes(reg):
    """What the forwarder asks before it removes a delivered body (and the bundle converted
    for it): a version is never removed, nor a body another delivery still has to send."""
    v1, _ = create(reg, "kept", "k1")
    create(reg, "kept", "k2")
    body, loose = digest_of("envelope"), digest_of("converted")
    for number in (1, 2):
        assert reg.outbox_enqueue(reg.version_id("kept", number), "central")
    first, second = sorted(reg.outbox_claim("me", 1e12), key=lambda r: r["number"])
    for row in (first, second):  # the same bytes for both (bodies are content-addressed)
        reg.outbox_set_body(row["id"], body)
    reg.outbox_delivered(first, {})
    assert reg.outbox_body_kept(body)  # the second delivery still sends it
    assert reg.outbox_body_kept(v1["digest"])  # a version's bundle, always
    assert not reg.outbox_body_kept(loose)
    reg.outbox_delivered(second, {})
    assert not reg.outbox_body_kept(body)


def test_every_column_naming_a_blob_is_a_reference_that_fsck_and_the_forwarder_read():
    """A new table naming blobs must join ``BLOB_REFERENCES``, or fsck would not check its
    blobs and the forwarder could remove them; ``digests()`` reads exactly those columns.
    Only a delivery's body is not a reference: the forwarder removes it once delivered."""
    from handoff_agent.store import tables
    from handoff_agent.store.versions import REFERRERS

    named = {
        (table.name, column.name)
        for table in tables.metadata.sorted_tables
        for column in table.columns
        if "digest" in column.name or column.name == "onnx"
    }
    references = {(c.table.name, c.name) for c in tables.BLOB_REFERENCES}
    assert named - references == {("outbox", "body_digest"), ("deliveries", "body_digest")}
    for column in tables.BLOB_REFERENCES:
        query, _ = REFERRERS[column.table.name]
        assert list(query.selected_columns)[-1] is column, column
    assert len(REFERRERS) == len(tables.BLOB_REFERENCES)


def test_a_changes_actions_are_stored_pending_with_it_and_carried_out_once(reg):
    """What a kill between noticing a change and acting on it leaves: the snapshot and its
    pending triggers, committed together. Its agent's claim keeps others off them until it
    lapses (or that agent restarts and releases it); each is carried out once."""
    spec = {"model": "churn", "kind": "file", "source": "/d.csv", "every": 60.0}
    src = reg.watch_add({**spec, "on": ["change"], "actions": ["alert", "retrain"]}, "t")
    fp = {"fingerprint": "f1"}
    snap = reg.snapshot_add(
        src["id"], fp, "appended", None, {}, None, ("alert", "retrain"), "a", 100.0
    )
    alert, retrain = snap["owed"]["alert"], snap["owed"]["retrain"]
    rows = reg.triggers_of(src["id"])
    assert [(r["id"], r["action"], r["state"]) for r in rows] == [
        (alert, "alert", "pending"),
        (retrain, "retrain", "pending"),
    ]
    assert "claimed_by" not in rows[0]  # bookkeeping, not shown
    [change] = reg.sql("SELECT subject, payload FROM audit WHERE action = 'watch.change'")
    assert change[0] == f"source:{src['id']}" and '"owed"' in change[1]
    # Held by agent a until 100: agent b takes nothing before, both after
    assert reg.triggers_owed("b", 99.0, 200.0) == []
    assert [r["id"] for r in reg.triggers_owed("b", 101.0, 200.0)] == [alert, retrain]
    assert reg.triggers_owed("a", 150.0, 300.0) == []  # b holds them now
    # b restarts: what it held is owed again at once
    assert reg.triggers_release("b") == 2
    assert [r["id"] for r in reg.triggers_owed("a", 150.0, 300.0)] == [alert, retrain]
    # Carried out once: the second start of the same trigger changes nothing
    assert reg.trigger_start(alert, "done", {"x": 1}) is True
    assert reg.trigger_start(alert, "failed", {}) is False
    with pytest.raises(ValueError):
        reg.trigger_start(retrain, "pending", {})
    states = {r["id"]: (r["state"], r["detail"]) for r in reg.triggers_of(src["id"])}
    assert states[alert] == ("done", {"x": 1}) and states[retrain][0] == "pending"
    assert [r[0] for r in reg.sql("SELECT action FROM audit WHERE action LIKE 'trigger.%'")] == [
        "trigger.alert"
    ]
    assert reg.triggers_owed("b", 10_000.0, 10_100.0)[0]["id"] == retrain  # a's claim lapsed
    assert reg.audit_first_bad() is None
    # A snapshot that owes nothing stores no trigger and no audit row
    reg.snapshot_add(src["id"], {"fingerprint": "f1"}, "unchanged", None, {}, snap["id"])
    assert len(reg.triggers_of(src["id"])) == 2
    assert len(reg.sql("SELECT seq FROM audit WHERE action = 'watch.change'")) == 1


def test_the_lineage_keeps_a_removed_watch_and_its_oldest_triggers_fingerprint(reg):
    """A watch removed, and 1,100 fingerprints since its change: the graph still shows the
    source (``removed``) and the trigger with the fingerprint of the change that set it off."""
    from handoff_agent.watch import lineage

    spec = {"model": "churn", "kind": "file", "source": "/d.csv", "every": 60.0}
    src = reg.watch_add({**spec, "on": ["change"], "actions": ["alert"]}, "t")
    fp = {"fingerprint": "ab" * 32, "rows": 10, "schema_hash": "s", "stats": {}}
    snap = reg.snapshot_add(src["id"], fp, "appended", None, {}, None, ("alert",), "me", 0.0)
    reg.sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1100) "
        "INSERT INTO source_snapshots (source_id, fingerprint, change) "
        "SELECT :s, 'later', 'unchanged' FROM n",
        s=src["id"],
    )
    assert reg.watch_remove(src["id"], "t")
    g = lineage.graph(reg, "/d.csv")
    [source] = [n for n in g["nodes"] if n["kind"] == "source"]
    assert (source["source"], source["removed"]) == ("/d.csv", True)
    [trigger] = [n for n in g["nodes"] if n["kind"] == "trigger"]
    assert trigger["id"] == f"trigger:{snap['owed']['alert']}"
    assert trigger["fingerprint"] == "ab" * 32
    assert '"/d.csv (removed)"' in lineage.dot(g)
