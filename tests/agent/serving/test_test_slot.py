"""The model's one test slot between central replicas (serving/deploy.py on a real
MetadataStore, each backend): a load test keeps the slot for its whole run, another replica's
test of the same model waits its turn, and a replica that died holds nothing once its lease
ran out."""

from __future__ import annotations

import hashlib

import pytest

from handoff_agent.policy import Policy
from handoff_agent.serving.deploy import DeploymentService
from handoff_agent.store.metadata import MetadataStore


@pytest.fixture
def store(tmp_path, backend):
    s = MetadataStore.for_home(tmp_path, backend.database_url() or "")
    yield s
    s.close()


def validated(store, n: int) -> int:
    """churn:n entered validated, its validation queued (as the stage change does)."""
    digest = hashlib.sha256(f"churn-{n}".encode()).hexdigest()
    manifest = {"format_version": 1, "name": "churn", "serialization": "skops"}
    vid, number, _ = store.insert_version("churn", digest, 1, manifest, "ana", [])
    assert number == n
    store.stage_set(vid, "validated", "t", "", f"churn:{n}")
    store.validation_queue(vid, "churn", n, "t")
    return vid


def load_testing(store, vid: int, replica: str, lease: float = 600.0) -> None:
    """``replica`` claimed the version's validation and is load-testing it."""
    assert store.validation_claim(vid, replica, lease) is not None
    store.validation_update(vid, state="load_testing")


def in_test_slot(store) -> int | None:
    row = next((r for r in store.slots_of("churn") if r["slot"] == "test"), None)
    return None if row is None else int(row["number"])


def test_a_second_replica_waits_for_the_running_load_test_then_takes_the_slot(store):
    slots = DeploymentService(store, Policy())
    v1, v2 = validated(store, 1), validated(store, 2)
    load_testing(store, v1, "replica-a")
    load_testing(store, v2, "replica-b")

    assert slots.hold_test_slot("churn", 1, "validation", "replica-a") == "held"
    # b must not measure churn:1 under churn:2's name, nor a churn:2 under churn:1's
    assert slots.hold_test_slot("churn", 2, "validation", "replica-b") == "busy"
    assert in_test_slot(store) == 1

    store.validation_update(v1, state="done", verdict="pass")
    assert slots.hold_test_slot("churn", 2, "validation", "replica-b") == "held"
    # a's release comes after b took the slot: b's test keeps it
    slots.release_test_slot("churn", 1, "validation")
    assert in_test_slot(store) == 2


def test_a_dead_replicas_test_holds_nothing_once_its_lease_ran_out(store):
    slots = DeploymentService(store, Policy())
    v1, v2 = validated(store, 1), validated(store, 2)
    load_testing(store, v1, "replica-a", lease=-1.0)  # died mid-test, lease over
    load_testing(store, v2, "replica-b")
    store.slot_set("churn", "test", v1, 1, 0.0, "validation")

    assert slots.hold_test_slot("churn", 2, "validation", "replica-b") == "held"
    assert in_test_slot(store) == 2


def test_a_restarted_replica_does_not_wait_for_its_own_earlier_claim(store):
    slots = DeploymentService(store, Policy())
    v1, v2 = validated(store, 1), validated(store, 2)
    load_testing(store, v1, "replica-a")  # from before a restart of the same home
    store.slot_set("churn", "test", v1, 1, 0.0, "validation")
    load_testing(store, v2, "replica-a")

    assert slots.hold_test_slot("churn", 2, "validation", "replica-a") == "held"
    slots.release_test_slot("churn", 2, "validation")
    assert in_test_slot(store) == 2  # the newest validated


def test_a_version_that_left_validated_does_not_take_the_slot(store):
    slots = DeploymentService(store, Policy())
    v1 = validated(store, 1)
    store.stage_set(v1, "rejected", "t", "", "churn:1")
    assert slots.hold_test_slot("churn", 1, "validation", "replica-a") == "left"
    assert in_test_slot(store) is None
