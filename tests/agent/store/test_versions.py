"""Listing at scale, on each backend: the bulk import numbers and chains what it creates,
pages of versions walk a model's whole history newest first, each with its latest stage, and
models list with their latest version's status, a page at a time."""

from __future__ import annotations

import hashlib

import pytest

from handoff_agent.errors import NotFound
from handoff_agent.store.metadata import MetadataStore

N = 5000


def digest(i: int, name: str = "big") -> str:
    return hashlib.sha256(f"{name}-{i}".encode()).hexdigest()


def manifest(name: str) -> dict:
    return {"format_version": 1, "name": name, "serialization": "skops", "flavor": "sklearn"}


@pytest.fixture
def store(tmp_path, backend):
    s = MetadataStore.for_home(tmp_path, backend.database_url() or "")
    yield s
    s.close()


def test_bulk_import_numbers_lines_and_audits_every_version(store):
    store.insert_version("big", digest(-1), 1, manifest("big"), "ana", [])  # one made by push
    numbers = store.insert_versions_bulk(
        "big", [(digest(i), 100 + i, manifest("big")) for i in range(10)], "seed"
    )
    assert numbers == list(range(2, 12))
    more = store.insert_versions_bulk("big", [(digest(10), 1, manifest("big"))], "seed")
    assert more == [12]
    # The next push takes the next number, and its parent is the last imported version.
    _, number, created = store.insert_version("big", digest(99), 1, manifest("big"), "ana", [])
    assert (number, created) == (13, True)
    assert store.get_version("big", 13)["lineage"][0]["parent_number"] == 12
    assert store.get_version("big", 5)["lineage"][0]["parent_number"] == 4
    assert store.get_version("big", 5)["size"] == 103
    subjects = [r["subject"] for r in store.audit_rows(("version.create",))]
    assert subjects == [f"big:{n}" for n in range(1, 14)]
    assert store.verify_audit() is None


def test_pages_walk_every_version_newest_first_with_the_latest_stage(store):
    store.insert_versions_bulk("big", [(digest(i), i, manifest("big")) for i in range(N)], "s")
    other = [(digest(i, "o"), i, manifest("other")) for i in range(3)]
    store.insert_versions_bulk("other", other, "s")
    # A few versions move through stages; the listing shows the last move and who made it.
    moved = {
        N: ["received", "validated"],
        1: ["received"],
        777: ["received", "validated", "production"],
    }
    for number, moves in moved.items():
        vid = store.version_id("big", number)
        for k, stage in enumerate(moves):
            store.stage_set(vid, stage, f"user{k}", "", f"big:{number}")
    store.analyze()

    seen, before = [], None
    while True:
        page = store.list_versions("big", 1000, before)
        if not page:
            break
        seen += page
        before = page[-1]["number"]
    assert [v["number"] for v in seen] == list(range(N, 0, -1))
    assert {v["model"] for v in seen} == {"big"}
    by_number = {v["number"]: v for v in seen}
    assert (by_number[N]["stage"], by_number[N]["stage_by"]) == ("validated", "user1")
    assert (by_number[777]["stage"], by_number[777]["stage_by"]) == ("production", "user2")
    assert (by_number[1]["stage"], by_number[1]["stage_by"]) == ("received", "user0")
    assert (by_number[2]["stage"], by_number[2]["stage_by"]) == (None, None)
    assert store.list_versions("big", 100)[0]["number"] == N
    assert [v["number"] for v in store.list_versions("big", 3, 778)] == [777, 776, 775]
    one = store.list_versions("big", 100, None, digest(41))
    assert [v["number"] for v in one] == [42]
    with pytest.raises(NotFound):
        store.list_versions("nobody", 100)


def test_a_listed_version_carries_its_signoffs_and_why_it_stopped(store):
    # What the panel shows under each version, from the list alone: every sign-off with its
    # comment, and a rejected version's reason in the words the notebook uses.
    store.insert_versions_bulk("r", [(digest(i, "r"), 1, manifest("r")) for i in range(4)], "s")
    one, two = store.version_id("r", 1), store.version_id("r", 2)
    store.stage_set(store.version_id("r", 4), "rollback", "guardrails", "error rate 9%", "r:4")
    for stage in ("received", "validated"):
        store.stage_set(one, stage, "central", "", "r:1")
        store.stage_set(two, stage, "central", "", "r:2")
    store.signoff_add(one, "approved", "reviewer", "bob", "approve", "fine", "r:1")
    store.stage_set(one, "approved", "bob", "fine", "r:1")
    store.signoff_add(two, "approved", "reviewer", "rita", "reject", "too few rows", "r:2")
    store.stage_set(two, "rejected", "rita", "too few rows", "r:2")
    rows = {v["number"]: v for v in store.list_versions("r", 10)}
    assert rows[2]["stage_text"] == "rejected by rita: too few rows"
    assert rows[1]["stage_text"] == "approved by bob"  # a comment is a stopped stage's only
    assert rows[3]["stage_text"] == "" and rows[3]["signoffs"] == []
    assert rows[4]["stage_text"] == "rollback by guardrails: error rate 9%"
    said = [
        {k: s[k] for k in ("stage", "role", "user", "decision", "comment")}
        for s in rows[2]["signoffs"]
    ]
    assert said == [
        {"stage": "approved", "role": "reviewer", "user": "rita", "decision": "reject",
         "comment": "too few rows"},
    ]  # fmt: skip
    assert rows[1]["signoffs"][0]["comment"] == "fine"
    # the version's own page says the same
    assert store.get_version("r", 2)["stage_text"] == "rejected by rita: too few rows"


def test_models_list_with_their_latest_status_a_page_at_a_time(store):
    names = [f"m{i:03d}" for i in range(25)]
    for i, name in enumerate(names):
        store.insert_versions_bulk(
            name, [(digest(k, name), k, manifest(name)) for k in range(i + 1)], "s"
        )
        vid = store.version_id(name, i + 1)
        store.set_version(vid, status="passed" if i % 2 else "failed")
    everything = store.list_models()
    assert [m["name"] for m in everything] == names
    assert [m["versions"] for m in everything] == list(range(1, 26))
    assert [m["latest_status"] for m in everything] == [
        "passed" if i % 2 else "failed" for i in range(25)
    ]
    pages, after = [], None
    while page := store.list_models(10, after):
        pages.append([m["name"] for m in page])
        after = page[-1]["name"]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [n for page in pages for n in page] == names


def test_models_known_only_from_an_imported_log_page_in_among_the_pushed_ones(store, tmp_path):
    """Central's models list merges in the models monitored from an imported log (no version
    here), by name, each page whole: a name on no page twice, none left out."""
    import numpy as np
    import pandas as pd

    from handoff_agent.monitor import backfill
    from handoff_agent.store.blobs import open_blob_store

    blobs = open_blob_store("", tmp_path)
    pushed = [f"m{i:02d}" for i in range(0, 12, 2)]
    for name in pushed:
        store.insert_versions_bulk(name, [(digest(1, name), 1, manifest(name))], "s")
    imported = [f"m{i:02d}" for i in range(1, 12, 3)] + ["m00"]  # m00 also pushed
    for name in imported:
        for segment in range(3):  # several segments each: each name still listed once
            log = pd.DataFrame({"x": np.arange(4.0), "prediction": 1})
            log["time"] = 1_767_225_600 + segment * 3600 + np.arange(4.0)
            backfill.import_log(store, blobs, name, log, "test")
    pages, after = [], None
    while page := store.models_page(3, after, imported=True):
        pages.append(page)
        after = page[-1]["name"]
    rows = [r for page in pages for r in page]
    assert [r["name"] for r in rows] == sorted(set(pushed) | set(imported))
    assert {r["name"] for r in rows if r["imported"]} == set(imported) - set(pushed)
    assert all(len(p) == 3 for p in pages[:-1])
    # a local agent's list (imported=False) is the pushed models alone
    assert [r["name"] for r in store.models_page(100)] == pushed
