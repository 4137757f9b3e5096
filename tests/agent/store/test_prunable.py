"""Which versions may lose their bundle, on each backend: never the newest, one still
checking, one at a live stage, one serving in a slot, one with a delivery to go, or one the
caller protects (the champion); the removal is audited and restored by the same bytes."""

from __future__ import annotations

import json

import pytest
from test_metadata import Registry, create, digest_of

from handoff_agent.errors import Gone
from handoff_agent.retention import Retention
from handoff_agent.store.blobs import open_blob_store
from handoff_agent.store.metadata import MetadataStore


@pytest.fixture
def reg(tmp_path, backend):
    r = Registry(MetadataStore.for_home(tmp_path, backend.database_url() or ""))
    yield r
    r.close()


def _passed(reg, name, contents):
    for content in contents:
        v, _ = create(reg, name, content)
        reg.sql("update versions set status = 'passed' where number = :n", n=v["number"])


def numbers(rows):
    return [r["number"] for r in rows]


def test_only_old_versions_nothing_needs_may_go(reg):
    _passed(reg, "m", [f"v{i}" for i in range(1, 10)])
    assert numbers(reg.prunable("m", keep=2)) == [1, 2, 3, 4, 5, 6, 7]
    reg.sql("update versions set status = 'checking' where number = 1")
    reg.sql("update versions set stage = 'production' where number = 2")
    reg.sql("update versions set stage = 'archived' where number = 3")  # ended: may go
    reg.sql("update versions set stage = 'rejected' where number = 4")  # ended: may go
    reg.sql("update versions set stage = 'received' where number = 5")  # waits at central
    assert reg.outbox_enqueue(reg.version_id("m", 6), "central")  # a delivery to go
    assert numbers(reg.prunable("m", keep=2, protect=(7,))) == [3, 4]
    slot = "insert into deployments (model, slot, version_id, number, traffic, since, by) "
    reg.sql(slot + "values ('m', 'previous', :v, 3, 0, 'now', 'x')", v=reg.version_id("m", 3))
    assert numbers(reg.prunable("m", keep=2, protect=(7,))) == [4]  # warm for a rollback
    assert reg.prunable("m", keep=100) == [] and reg.prunable("other", keep=1) == []


def test_a_prune_is_audited_and_the_same_bytes_bring_the_bundle_back(reg):
    _passed(reg, "m", ["a", "b", "c"])
    row = reg.prunable("m", keep=2)[0]
    removed = []
    assert reg.prune_version("m", row, 2, (), "ops")
    assert reg.drop_pruned_bundle(row["id"], removed.append)
    assert removed == [digest_of("a")]
    assert reg.get_version("m", 1)["pruned"] and not reg.get_version("m", 2)["pruned"]
    assert digest_of("a") not in reg.digests()  # fsck and backups expect it gone
    assert reg.champion("m")["number"] == 3 and reg.champion("m", before=2) is None
    pruned = reg.audit_rows(("version.prune",))
    assert [(r["actor"], r["subject"]) for r in pruned] == [("ops", "m:1")]
    assert not reg.prune_version("m", row, 2, (), "ops")  # once only

    assert not reg.restore_pruned(row["id"], lambda: False, "ana")  # the bytes are not back
    assert reg.restore_pruned(row["id"], lambda: True, "ana")
    assert reg.get_version("m", 1)["pruned"] is None and digest_of("a") in reg.digests()
    assert [r["subject"] for r in reg.audit_rows(("version.restore",))] == ["m:1"]
    assert reg.audit_first_bad() is None


def test_bytes_a_push_restored_meanwhile_are_never_removed(reg):
    """Marked, then the same bytes pushed again before the removal: the bytes stay."""
    _passed(reg, "m", ["a", "b"])
    row = reg.prunable("m", keep=1)[0]
    assert reg.prune_version("m", row, 1, (), "ops")
    assert reg.restore_pruned(row["id"], lambda: True, "ana")
    removed = []
    assert not reg.drop_pruned_bundle(row["id"], removed.append) and removed == []


def test_a_removal_that_fails_leaves_the_version_with_its_bundle(reg):
    _passed(reg, "m", ["a", "b"])

    class Down:
        def delete(self, digest):
            raise OSError("the store is down")

    with pytest.raises(OSError, match="the store is down"):
        Retention(reg.store, Down(), reg.champion).prune("m", 1, "ops")
    assert reg.get_version("m", 1)["pruned"] is None
    rows = reg.audit_rows(("version.prune", "version.restore"))
    audit = [(r["action"], r["subject"]) for r in rows]
    assert audit == [("version.prune", "m:1"), ("version.restore", "m:1")]


def test_a_forward_of_a_pruned_version_is_refused_in_its_own_transaction(reg):
    """The forward reads the mark under the model's lock: after a prune it is a 410, and a
    delivery it queued first keeps the version from a prune after it."""
    _passed(reg, "m", ["a", "b", "c"])
    first, second = reg.prunable("m", keep=1)
    assert reg.service.force_forward("m", 2, "central", "ana")
    assert not reg.prune_version("m", second, 1, (), "ops")  # its delivery is still to go
    assert reg.prune_version("m", first, 1, (), "ops")
    with pytest.raises(Gone, match="m:1's bundle was pruned on "):
        reg.service.force_forward("m", 1, "central", "ana")
    assert reg.outbox_for_version(first["id"]) == []


def test_a_pruned_versions_onnx_graph_goes_with_its_bundle(reg, tmp_path):
    """Central made each validated version an ONNX graph; archived, it never serves again:
    the graph goes too, audited and counted in what was freed, unless a version that stays
    names the same graph."""
    blobs = open_blob_store("", tmp_path / "blobs")
    _passed(reg, "m", ["a", "b", "c"])
    own, shared = blobs.put_bytes(b"1" * 1000), blobs.put_bytes(b"2" * 3000)
    for number, graph, size in ((1, own, 1000), (2, shared, 3000), (3, shared, 3000)):
        vid = reg.version_id("m", number)
        reg.validation_queue(vid, "m", number, "agent")
        conversion = {"converted": True, "onnx_size": size}
        reg.validation_update(vid, onnx=graph, conversion=conversion, state="done")
    reg.sql("update versions set stage = 'archived' where number < 3")

    retention = Retention(reg.store, blobs, reg.champion)
    bundles = sum(reg.get_version("m", n)["size"] for n in (1, 2))
    said = retention.prune("m", 1, "ops", dry_run=True)  # counts a shared graph too
    assert (said["pruned"], said["freed"]) == ([1, 2], bundles + 4000)
    out = retention.prune("m", 1, "ops")
    assert out["pruned"] == [1, 2]
    assert out["freed"] == bundles + 1000  # the shared graph stays for version 3
    assert not blobs.exists(own) and blobs.exists(shared)
    graphs = {n: r["onnx"] for n, r in reg.validations_of("m", [1, 2, 3]).items()}
    assert graphs == {1: None, 2: None, 3: shared}
    assert own not in reg.digests() and shared in reg.digests()
    rows = reg.audit_rows(("version.prune_graph",))
    said = [(r["subject"], json.loads(r["payload"])["onnx"]) for r in rows]
    assert said == [("m:1", own), ("m:2", shared)]
    assert reg.audit_first_bad() is None
