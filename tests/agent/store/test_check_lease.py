"""Check runs are claimed with a lease, on each backend: a claim that lapses (its replica died)
is taken over and run again from the start, audited with the replica that held it; a live
claim, renewed, is never taken; and a late result from the replica that lost the run changes
nothing. A negative lease is a claim that lapsed already: no test waits for a clock."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import inspect, text

from handoff_agent.gate import GatePolicy
from handoff_agent.store.metadata import MetadataStore
from handoff_agent.store.migrations import upgrade
from handoff_agent.versions import VersionService

LAPSED = -1.0  # a claim whose lease ran out already
LIVE = 600.0


@pytest.fixture
def store(tmp_path, backend):
    s = MetadataStore.for_home(tmp_path, backend.database_url() or "")
    yield s
    s.close()


def push(store, checks=("loads", "smoke")) -> VersionService:
    service = VersionService(store, GatePolicy().verdict)
    service.create_version("m", "d" * 64, 1, {"name": "m"}, "ana", list(checks))
    return service


def runs_of(store) -> dict[str, dict]:
    return {c["name"]: c for c in store.get_version("m", 1)["checks"]}


def test_a_lapsed_claim_is_taken_over_and_the_late_result_of_its_old_owner_changes_nothing(
    store,
):
    service = push(store)
    # Given replica a claimed both runs, started one, and then stopped renewing (died)
    claimed = store.claim_checks("a", LAPSED)
    ids = {r["check_name"]: r["id"] for r in claimed}
    assert set(ids) == {"loads", "smoke"}
    assert store.claim_check(ids["loads"], "a")
    # When replica b's scheduling pass comes by
    taken = store.claim_checks("b", LIVE)
    # Then b holds both, to run from the start
    assert sorted(r["id"] for r in taken) == sorted(ids.values())
    assert {r["taken_from"] for r in taken} == {"a"}
    assert {c["status"] for c in runs_of(store).values()} == {"queued"}
    assert all(c["started"] is None for c in runs_of(store).values())
    # and the audit log says who held them
    rows = store.audit_rows(("check.reclaimed",))
    said = sorted((json.loads(r["payload"])["check"], json.loads(r["payload"])) for r in rows)
    assert [(c, p["from"], p["by"], p["was"]) for c, p in said] == [
        ("loads", "a", "b", "running"),
        ("smoke", "a", "b", "queued"),
    ]
    assert all(r["subject"] == "m:1" for r in rows)
    # When a's worker finishes late: its start and its result are refused, nothing stored
    assert not store.claim_check(ids["smoke"], "a")
    assert service.finish_check(ids["loads"], "fail", "late", {}, 1.0, "a") is None
    assert runs_of(store)["loads"]["status"] == "queued"
    # Then b's results are the ones that count, and they conclude the verdict
    for name in ("loads", "smoke"):
        assert store.claim_check(ids[name], "b")
        out = service.finish_check(ids[name], "pass", "ok", {}, 0.1, "b")
    assert out["verdict"]["verdict"] == "pass"
    # and a result that comes from a even later overwrites nothing
    assert service.finish_check(ids["smoke"], "fail", "later", {}, 1.0, "a") is None
    version = store.get_version("m", 1)
    assert version["status"] == "passed"
    assert {c["name"]: c["message"] for c in version["checks"]} == {"loads": "ok", "smoke": "ok"}
    assert len(store.audit_rows(("version.verdict",))) == 1
    assert store.verify_audit() is None


def test_a_renewed_claim_is_never_taken_and_a_finished_run_is_recorded_once(store):
    service = push(store)
    ids = [r["id"] for r in store.claim_checks("a", LAPSED)]
    # Replica a renews what it runs (one statement for all): b finds nothing to take
    assert store.renew_checks("a", ids, LIVE) == 2
    assert store.claim_checks("b", LIVE) == []
    assert store.audit_rows(("check.reclaimed",)) == []
    # A result counts once: the same run finished again is refused
    assert service.finish_check(ids[0], "pass", "ok", {}, 0.1, "a") is not None
    assert service.finish_check(ids[0], "fail", "again", {}, 0.1, "a") is None
    assert runs_of(store)["loads"]["status"] == "pass"
    # A renewal no longer touches a run another replica took over
    store.renew_checks("a", ids, LAPSED)
    assert [r["id"] for r in store.claim_checks("b", LIVE)] == ids[1:]
    assert store.renew_checks("a", ids, LIVE) == 0


def test_a_process_does_not_take_over_the_runs_it_runs_itself(store):
    push(store)
    ids = tuple(r["id"] for r in store.claim_checks("a", LAPSED))
    # Its own claims lapsed while it could not renew them (a database outage), but it still
    # runs them: its pass leaves them be; a run it no longer runs is taken again
    assert store.claim_checks("a", LIVE, mine=ids) == []
    assert [r["id"] for r in store.claim_checks("a", LIVE, mine=ids[:1])] == list(ids[1:])


def test_a_restart_releases_its_own_claims_at_once(store):
    push(store)
    ids = [r["id"] for r in store.claim_checks("a", LIVE)]
    assert store.claim_checks("b", LIVE) == []
    assert store.requeue_interrupted("a") == 2
    assert [r["id"] for r in store.claim_checks("b", LIVE)] == ids
    assert store.audit_rows(("check.reclaimed",)) == []  # released, not taken over


def test_m016_adds_the_lease_and_gives_claims_held_at_the_upgrade_one_lease(store):
    """A database at m015 (no ``check_runs.claimed_until``) upgrades on each backend: a claim
    held then lapses one lease later like any other, so a replica that died before the
    upgrade does not hold its runs forever."""
    push(store)
    with store.engine.begin() as c:
        c.execute(text("ALTER TABLE check_runs DROP COLUMN claimed_until"))
        c.execute(text("DELETE FROM schema_migrations WHERE name = 'm016_check_lease'"))
        c.execute(text("UPDATE check_runs SET claimed_by = 'gone' WHERE check_name = 'smoke'"))
    assert upgrade(store.engine) == ["m016_check_lease"]
    assert "claimed_until" in {c["name"] for c in inspect(store.engine).get_columns("check_runs")}
    with store.engine.begin() as c:
        until = dict(c.execute(text("SELECT check_name, claimed_until FROM check_runs")).all())
    assert until["loads"] is None and until["smoke"] is not None
    # Still held now, so another replica takes only the free run
    assert [r["check_name"] for r in store.claim_checks("b", LIVE)] == ["loads"]
