"""A home from before the model server (schema m007) kept its versions' stages and had no
slots: central gives them their slots at start, each with its audit row, so the version in
production serves again after the upgrade."""

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
