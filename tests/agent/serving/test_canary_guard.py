"""serving/canary_guard.py on a real MetadataStore (each backend), without HTTP: replicas' stats add
up, one replica of two acts on an alarm (its webhook notice committed with the rollback), steps
move once, and the gates say why they refuse."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from handoff_agent.deploy_policy import DeployPolicy
from handoff_agent.errors import Conflict, NotFound
from handoff_agent.forwarding.notices import Notices
from handoff_agent.forwarding.webhook import WebhookDestination
from handoff_agent.policy import Policy
from handoff_agent.serving.canary_guard import SLICE_SECONDS, Guardrails
from handoff_agent.serving.deploy import DeploymentService
from handoff_agent.serving.stats import StatsBook, counted_from
from handoff_agent.store.metadata import MetadataStore


@pytest.fixture
def store(tmp_path, backend):
    s = MetadataStore.for_home(tmp_path, backend.database_url() or "")
    yield s
    s.close()


def version(store, n: int) -> tuple[int, int]:
    digest = hashlib.sha256(f"churn-{n}".encode()).hexdigest()
    manifest = {"format_version": 1, "name": "churn", "serialization": "skops"}
    vid, number, _ = store.insert_version("churn", digest, 1, manifest, "ana", [])
    return vid, number


def replica(store, policy, name: str, events: list) -> Guardrails:
    deployments = DeploymentService(store, policy)
    return Guardrails(store, deployments, policy, lambda k, **d: events.append((k, d)), name)


def counted() -> float:
    """A moment in the first stats slice counted for a slot set until now: the slice a slot
    is set in holds requests from before, and never counts."""
    return counted_from(time.time(), SLICE_SECONDS) + 1


def traffic(store, replica_id: str, slot: str, number: int, n: int, errors=0, now=None):
    """``n`` requests of one version in one slot, as a replica's server stores them (at
    ``now``, by default ``counted()``)."""
    book = StatsBook(slice_seconds=SLICE_SECONDS)
    now = counted() if now is None else now
    for i in range(n):
        book.get("churn", number, slot).record(
            now, 2.0, error=i < errors, classes=[i % 2], scores=[(i % 10) / 10 + 0.05]
        )
    store.serving_stats_add(replica_id, book.drain_slices())


@pytest.fixture
def canary(store):
    """churn:1 in production, churn:2 its canary at 50 %."""
    v1, n1 = version(store, 1)
    v2, n2 = version(store, 2)
    store.stage_set(v1, "production", "t", "", "churn:1")
    store.stage_set(v2, "canary", "t", "", "churn:2")
    store.slot_set("churn", "production", v1, n1, 100.0, "t")
    store.slot_set("churn", "canary", v2, n2, 50.0, "t")
    return n1, n2


def test_every_replicas_counts_add_up(store, canary):
    policy = Policy(deploy=DeployPolicy(min_requests=10))
    traffic(store, "a", "canary", 2, 30)
    traffic(store, "b", "canary", 2, 12)
    traffic(store, "a", "canary", 2, 8)  # a second flush adds into a's row
    judged = replica(store, policy, "a", []).judge("churn", now=counted())
    assert judged["stats"]["canary"]["requests"] == 50
    assert judged["stats"]["canary"]["p50_ms"] == pytest.approx(2.0, rel=0.05)
    assert judged["stats"]["production"]["requests"] == 0
    assert judged["canary"]["state"] == "baking"


def test_one_replica_of_two_rolls_back_and_the_other_finds_nothing(store, canary):
    policy = Policy(deploy=DeployPolicy(min_requests=20))
    traffic(store, "a", "production", 1, 40)
    traffic(store, "b", "canary", 2, 5, errors=2)  # 2 errors > 1 % of min_requests
    seen_a, seen_b = [], []
    a, b = replica(store, policy, "a", seen_a), replica(store, policy, "b", seen_b)
    now = counted()
    out = a.tick(now, 7)
    assert [k for k, _ in out] == ["guardrail", "stage"]
    assert out[0][1]["alarm"]["metric"] == "error_rate" and out[0][1]["tick"] == 7
    assert b.tick(now, 7) == []  # the canary is gone: nothing to judge, nothing done
    assert store.get_version("churn", 2)["stage"] == "rollback"
    assert [r["slot"] for r in store.slots_of("churn")] == ["production"]
    rows = store.guardrail_events_of("churn", 2)
    assert [(r["state"], r["percent"]) for r in rows] == [("rollback", 0.0)]
    # Rolling back again finds no canary (the tick takes this, and a lost stage race, quietly)
    with pytest.raises(NotFound):
        a.deployments.abort_canary("churn", "again")


def test_a_rollback_commits_its_webhook_notice_once_across_replicas(store, canary):
    """The rollback's notice is a row written in the rollback's transaction, by the replica
    that acted: nothing between the commit and a first attempt can lose it."""
    policy = Policy(deploy=DeployPolicy(min_requests=20))
    traffic(store, "a", "production", 1, 40)
    traffic(store, "b", "canary", 2, 5, errors=2)
    hook = WebhookDestination(url="http://127.0.0.1:9/hook", secret="s" * 32)
    a, b = replica(store, policy, "a", []), replica(store, policy, "b", [])
    for r in (a, b):
        r.notify = Notices(lambda: [hook], None, [1.0], store, None, r.replica).keep
    now = counted()
    # When both replicas see the alarm in one tick
    (kind, event), _ = a.tick(now, 7)
    assert kind == "guardrail" and b.tick(now, 7) == []
    # Then one notice waits for the webhook, due now, saying what the event says
    (row,) = store.notices_claim("c", time.time() + 1)
    assert (row["kind"], row["destination"], row["attempts"]) == ("guardrail", "webhook", 0)
    assert json.loads(row["body"]) == {"type": "guardrail", **event}
    assert (event["state"], event["version"], event["production"]) == ("rollback", 2, 1)


def test_steps_move_once_and_the_bake_gates_promotion(store, canary):
    policy = Policy(
        deploy=DeployPolicy(steps=(50, 80), step_seconds=1, bake_seconds=1, min_requests=10)
    )
    a, b = replica(store, policy, "a", []), replica(store, policy, "b", [])
    traffic(store, "a", "production", 1, 20)
    traffic(store, "a", "canary", 2, 20)
    with pytest.raises(Conflict) as refused:
        a.guard({}, "production", "churn:2")
    assert refused.value.code == "bake_not_clean" and "Step 1 of 2" in refused.value.message
    later = counted() + 1
    assert [e[1]["state"] for e in a.tick(later, 1)] == ["step_up"]
    with pytest.raises(Conflict) as lost:  # b read the old share: its step is refused
        b.deployments.set_traffic("churn", 80.0, "guardrails", expected=50.0)
    assert lost.value.code == "traffic_race"
    assert {r["slot"]: r["traffic"] for r in store.slots_of("churn")}["canary"] == 80.0
    # At the last step, after the bake, with traffic since the step: a clean bake
    traffic(store, "a", "production", 1, 20, now=later + 5)
    traffic(store, "a", "canary", 2, 20, now=later + 5)
    a.guard({}, "production", "churn:2", now=later + 10)
    ready = [r["state"] for r in store.guardrail_events_of("churn", 2)]
    assert ready == ["step_up"]
    assert [e[1]["state"] for e in a.tick(later + 10, 2)] == ["promote_ready"]
    assert a.tick(later + 11, 3) == []  # recorded once, not every tick


def test_a_canary_with_no_production_serves_everything_and_says_so(store):
    """A model's first version as a canary takes all the traffic: its decision says 100 %,
    and no step is taken (there is nothing to share the traffic with)."""
    v1, n1 = version(store, 1)
    store.stage_set(v1, "canary", "t", "", "churn:1")
    store.slot_set("churn", "canary", v1, n1, 10.0, "t")
    policy = Policy(deploy=DeployPolicy(steps=(10, 50), step_seconds=1, min_requests=10))
    guard = replica(store, policy, "a", [])
    traffic(store, "a", "canary", n1, 3)
    decision = guard.judge("churn")["canary"]
    assert decision["state"] == "baking" and decision["reason"].startswith("Baking at 100%")
    traffic(store, "a", "canary", n1, 20)
    assert [e[1]["state"] for e in guard.tick(time.time() + 5, 1)] != ["step_up"]
    assert {r["slot"]: r["traffic"] for r in store.slots_of("churn")}["canary"] == 10.0


def test_the_shadow_report_gates_the_canary(store):
    v1, n1 = version(store, 1)
    v2, n2 = version(store, 2)
    store.stage_set(v1, "production", "t", "", "churn:1")
    store.stage_set(v2, "approved", "t", "", "churn:2")
    store.slot_set("churn", "production", v1, n1, 100.0, "t")
    store.slot_set("churn", "shadow", v2, n2, 0.0, "t")
    policy = Policy(deploy=DeployPolicy(shadow=True, min_requests=10, min_agreement=0.9))
    a = replica(store, policy, "a", [])
    now = counted() + 1
    with pytest.raises(Conflict) as refused:
        a.guard({}, "canary", "churn:2", now=now)
    assert refused.value.code == "shadow_not_passed" and "more mirrored" in refused.value.message
    traffic(store, "a", "production", 1, 20)
    book = StatsBook(slice_seconds=SLICE_SECONDS)
    shadow = book.get("churn", 2, "shadow")
    for i in range(20):  # the same answers as production's, but one in four disagrees
        shadow.record(now - 1, 2.0, classes=[i % 2], scores=[(i % 10) / 10 + 0.05])
        shadow.record_pair(now - 1, i % 4 != 0)
    store.serving_stats_add("a", book.drain_slices())
    with pytest.raises(Conflict) as refused:
        a.guard({}, "canary", "churn:2", now=now)
    assert "below min_agreement" in refused.value.message
    assert a.judge("churn", now=now)["shadow"]["agreement"] == 0.75
    assert [e[1]["state"] for e in a.tick(now, 1)] == ["failed"]
    # Without the gate the report is still shown, and the move is allowed
    ungated = replica(store, Policy(deploy=DeployPolicy(shadow=True, shadow_gate=False)), "b", [])
    ungated.guard({}, "canary", "churn:2", now=now)
    assert ungated.judge("churn", now=now)["shadow"]["gates"] is False
