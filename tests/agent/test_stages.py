"""Sign-offs as the policy counts them: each role by distinct people."""

from __future__ import annotations

import pytest
from store.test_metadata import Registry, digest_of, manifest

from handoff_agent.errors import Conflict
from handoff_agent.policy import Policy
from handoff_agent.stages import StageManager
from handoff_agent.store.metadata import MetadataStore


@pytest.fixture
def stages(tmp_path):
    policy = Policy(stages={"approved": {"reviewer": 1, "admin": 1}})
    r = Registry(MetadataStore.for_home(tmp_path, ""))
    v, _ = r.create_version("churn", digest_of("churn"), 1, manifest("churn"), "ana", [])
    r.stage_set(r.version_id("churn", v["number"]), "validated", "agent", "", "churn:1")
    yield StageManager(r, policy)
    r.close()


def test_one_with_both_roles_fills_the_role_still_missing(stages):
    """bob (reviewer) signs first; carol, a reviewer and an admin, then signs as the admin
    still missing, and the version moves on: no third person who is only an admin."""
    bob = {"user": "bob", "roles": ["reviewer"]}
    carol = {"user": "carol", "roles": ["reviewer", "admin"]}
    assert stages.sign("churn", 1, bob, "approve", "") == {
        "stage": "validated",
        "waiting_for": "approved",
    }
    assert stages.sign("churn", 1, carol, "approve", "") == {"stage": "approved"}
    roles = {
        s["user"]: s["role"]
        for s in stages.signoffs(stages.store.version_id("churn", 1), "approved")
    }
    assert roles == {"bob": "reviewer", "carol": "admin"}


def test_one_with_both_roles_counts_once(stages):
    """carol signing first fills one role (the policy's first); she cannot fill both."""
    carol = {"user": "carol", "roles": ["reviewer", "admin"]}
    assert stages.sign("churn", 1, carol, "approve", "")["waiting_for"] == "approved"
    with pytest.raises(Conflict, match="already signed off"):
        stages.sign("churn", 1, carol, "approve", "")
