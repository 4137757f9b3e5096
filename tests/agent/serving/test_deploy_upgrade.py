"""Slots that stages alone do not explain. A home from before the model server (schema m007)
kept its versions' stages and had no slots: central gives them their slots at start, each
with its audit row, so the version in production serves again after the upgrade; a start
never moves a served model's traffic. A second canary is refused while one runs, and
decisions on one model take turns across replicas."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from handoff_agent.policy import Policy
from handoff_agent.serving.deploy import DeploymentService
from handoff_agent.store.metadata import MetadataStore


@pytest.fixture
def store(tmp_path, backend):
    s = MetadataStore.for_home(tmp_path, backend.database_url() or "")
    yield s
    s.close()


def at_stage(store, n: int, stage: str) -> None:
    """churn:n in ``stage`` as an old central left it: the stage row, no slot."""
    digest = hashlib.sha256(f"churn-{n}".encode()).hexdigest()
    manifest = {"format_version": 1, "name": "churn", "serialization": "skops"}
    vid, number, _ = store.insert_version("churn", digest, 1, manifest, "ana", [])
    store.stage_set(vid, stage, "rita", "", f"churn:{number}")


def test_versions_left_in_production_and_canary_get_their_slots_once(store):
    at_stage(store, 1, "archived")
    at_stage(store, 2, "production")
    at_stage(store, 3, "canary")
    deployments = DeploymentService(store, Policy())
    assert deployments.adopt_unslotted() == ["churn:2 (production)", "churn:3 (canary)"]
    slots = {r["slot"]: (r["number"], r["traffic"]) for r in store.slots_of("churn")}
    share = float(Policy().deploy.schedule[0])
    assert slots == {"production": (2, 100.0), "canary": (3, share)}
    audit = [(e["action"], e["subject"]) for e in store.audit_rows() if e["actor"] == "upgrade"]
    assert audit == [("deploy.slot", "churn:2"), ("deploy.slot", "churn:3")]
    assert deployments.adopt_unslotted() == []  # the next start finds nothing to place


def test_a_start_never_moves_the_traffic_of_a_model_that_has_slots(store):
    """A version in stage canary with no slot beside a served production (an older build
    let a second canary displace the first): a restart leaves the traffic as it is, and
    archives the displaced one, saying why."""
    deployments = DeploymentService(store, Policy())
    at_stage(store, 1, "production")
    deployments.adopt_unslotted()
    at_stage(store, 2, "canary")  # stage only: no slot, as the displaced canary was left
    why = "displaced by a later canary: it served no traffic and never baked"
    assert deployments.adopt_unslotted() == [f"churn:2 (archived: {why})"]
    assert [(r["slot"], r["number"]) for r in store.slots_of("churn")] == [("production", 1)]
    # archived, with why, so no queue offers it for production
    assert store.version_for_stage("churn", 2)["stage"] == "archived"
    assert deployments.adopt_unslotted() == []


def test_a_second_canary_is_refused_while_one_runs(store):
    """Moving another version to canary while one bakes would take its slot and leave it in
    stage canary serving nothing: 409 canary_live, naming the one that runs."""
    from handoff_agent.errors import Conflict
    from handoff_agent.stages import StageManager

    deployments = DeploymentService(store, Policy())
    stages = StageManager(store, Policy(stages={}), on_stage=deployments.on_stage)
    admin = {"user": "adam", "roles": ["admin"]}
    for n in (1, 2, 3):
        at_stage(store, n, "approved")
    stages.transition("churn", 2, admin, "canary", "")
    with pytest.raises(Conflict) as e:
        stages.transition("churn", 3, admin, "canary", "")
    assert e.value.code == "canary_live"
    assert e.value.message == (
        "churn:2 is the canary now; churn:3 cannot take its place while it runs."
    )
    assert store.version_for_stage("churn", 3)["stage"] == "approved"  # nothing moved
    assert [(r["slot"], r["number"]) for r in store.slots_of("churn")] == [("canary", 2)]


def test_decisions_on_one_model_take_turns(store):
    """A rollback of churn:1 on one replica and a sign-off of churn:2 on another: the second
    reads the model only once the first committed (the model's row is locked), so it judges
    the canary's bake on the slots the rollback left, never on those from before it."""
    at_stage(store, 1, "production")
    at_stage(store, 2, "canary")
    order, inside, release = [], threading.Event(), threading.Event()

    def first():
        with store.transaction():
            store.version_for_stage("churn", 1)
            inside.set()
            release.wait(30)
            order.append("first committed")

    def second():
        inside.wait(30)
        with store.transaction():
            store.version_for_stage("churn", 2)
            order.append("second read")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(30)
    time.sleep(0.5)  # room for the second to read, were the model not locked
    release.set()
    for t in threads:
        t.join(30)
    assert order == ["first committed", "second read"]
