"""Sign-offs as the policy counts them: each role by distinct people."""

from __future__ import annotations

import re
import threading

import pytest
from store.test_metadata import Registry, digest_of, manifest

from handoff_agent.errors import Conflict, Forbidden
from handoff_agent.policy import Policy
from handoff_agent.stages import StageManager
from handoff_agent.store.metadata import MetadataStore
from handoff_agent.vocabulary import when_text


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


def test_a_role_the_stage_does_not_name_is_refused_not_recorded(tmp_path):
    """An admin signing a stage only reviewers sign would be recorded (and shown in the
    dossier) yet count for nothing: refused, saying which role it needs."""
    policy = Policy(stages={"approved": {"reviewer": 1}})
    r = Registry(MetadataStore.for_home(tmp_path, ""))
    try:
        r.create_version("churn", digest_of("churn"), 1, manifest("churn"), "ana", [])
        r.stage_set(r.version_id("churn", 1), "validated", "agent", "", "churn:1")
        stages = StageManager(r, policy)
        adam = {"user": "adam", "roles": ["admin"]}
        with pytest.raises(Forbidden) as e:
            stages.sign("churn", 1, adam, "approve", "")
        assert e.value.code == "role_not_needed"
        assert e.value.message == (
            "adam cannot sign off for approved: it needs reviewer, and adam holds admin."
        )
        assert stages.signoffs(r.version_id("churn", 1)) == []
    finally:
        r.close()


@pytest.mark.parametrize(
    ("stage", "hint"),
    [
        ("received", "Central is still checking it: sign it off once it is validated."),
        ("rejected", "A rejected version is not signed off again: a fixed model comes as a "),
    ],
)
def test_a_version_no_sign_off_applies_to_says_why(tmp_path, stage, hint):
    """A sign-off while central still checks the version is 'not yet', not 'no longer'."""
    r = Registry(MetadataStore.for_home(tmp_path, ""))
    try:
        r.create_version("churn", digest_of("churn"), 1, manifest("churn"), "ana", [])
        r.stage_set(r.version_id("churn", 1), stage, "agent", "", "churn:1")
        stages = StageManager(r, Policy())
        rita = {"user": "rita", "roles": ["reviewer"]}
        with pytest.raises(Conflict) as e:
            stages.sign("churn", 1, rita, "approve", "", to="approved")
        assert e.value.code == "wrong_stage"
        assert e.value.message == (
            f"churn:1 is {stage}; there is nothing to sign off now, and nothing was recorded."
        )
        assert e.value.hint.startswith(hint)
    finally:
        r.close()


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ("[stages.production]\nrisk_officer = 1\n", "[stages.production] risk_officer is no "
         "role that signs off: the roles are reviewer and admin (a token's --role)."),
        ("[stages.canary]\nreviewer = \"two\"\n", "[stages.canary] reviewer must be a whole "
         "number of sign-offs >= 0, not 'two'."),
        ("[stages]\napproved = 2\n", "write [stages.approved] as a table of ROLE = COUNT lines."),
    ],
)  # fmt: skip
def test_a_stage_table_nobody_could_satisfy_stops_central_at_start(tmp_path, table, says):
    """A role no token can hold would leave every version waiting at that stage for ever."""
    path = tmp_path / "policy.toml"
    path.write_text(table)
    with pytest.raises(ValueError) as e:
        Policy.load(path)
    assert str(e.value) == f"{path}: {says}"


def test_a_version_whose_sign_offs_a_relaxed_policy_completes_is_listed_ready(tmp_path):
    """churn:1 had 1 of 2 reviewer sign-offs; central restarts asking for 1. It stays in the
    queue (it vanished, stuck), marked ready: one more sign-off, or an admin, moves it."""
    r = Registry(MetadataStore.for_home(tmp_path, ""))
    try:
        r.create_version("churn", digest_of("churn"), 1, manifest("churn"), "ana", [])
        r.stage_set(r.version_id("churn", 1), "validated", "agent", "", "churn:1")
        bob = {"user": "bob", "roles": ["reviewer"]}
        before = StageManager(r, Policy(stages={"approved": {"reviewer": 2}}))
        assert before.sign("churn", 1, bob, "approve", "")["waiting_for"] == "approved"
        after = StageManager(r, Policy(stages={"approved": {"reviewer": 1}}))
        (entry,) = after.queue()
        assert (entry["missing"], entry["ready"], entry["next"]) == ({}, True, "approved")
        carol = {"user": "carol", "roles": ["reviewer"]}
        adam = {"user": "adam", "roles": ["admin"]}
        assert after.queue(bob) == [] and len(after.queue(carol)) == len(after.queue(adam)) == 1
        assert after.sign("churn", 1, carol, "approve", "") == {"stage": "approved"}
    finally:
        r.close()


def test_a_withdrawal_racing_the_last_sign_off_never_leaves_it_counted(tmp_path, backend):
    """Two replicas on one database: carol's approval, which completes the stage, and bob's
    withdrawal of his land at once. Whichever takes the version's lock first wins, and the
    other sees it: moved with bob's sign-off counted (his withdrawal refused), or still
    waiting with only carol's. Never moved with bob's sign-off withdrawn."""
    url = backend.database_url() or ""
    policy = Policy(stages={"approved": {"reviewer": 2}})
    a = Registry(MetadataStore.for_home(tmp_path, url))
    b = Registry(MetadataStore.for_home(tmp_path, url))
    bob = {"user": "bob", "roles": ["reviewer"]}
    carol = {"user": "carol", "roles": ["reviewer"]}
    outcomes = []
    try:
        ours, theirs = StageManager(a, policy), StageManager(b, policy)
        for n in range(1, 13):
            a.create_version("churn", digest_of(f"churn{n}"), 1, manifest("churn"), "ana", [])
            a.stage_set(a.version_id("churn", n), "validated", "agent", "", f"churn:{n}")
            ours.sign("churn", n, bob, "approve", "")
            barrier, got = threading.Barrier(2), {}

            def run(key, call, *args, got=got, barrier=barrier):
                barrier.wait()
                try:
                    got[key] = call(*args)
                except Conflict as e:
                    got[key] = e.code

            threads = [
                threading.Thread(target=run, args=("sign", ours.sign, "churn", n, carol,
                                                   "approve", "")),
                threading.Thread(target=run, args=("withdraw", theirs.withdraw, "churn", n,
                                                   bob, "race")),
            ]  # fmt: skip
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            signed = {s["user"] for s in ours.signoffs(a.version_id("churn", n), "approved")}
            stage = a.get_version("churn", n)["stage"]
            if stage == "approved":
                assert got["withdraw"] == "signoff_counted" and signed == {"bob", "carol"}
            else:
                assert stage == "validated" and got["withdraw"]["withdrawn"]["user"] == "bob"
                assert got["sign"] == {"stage": "validated", "waiting_for": "approved"}
                assert signed == {"carol"}
            outcomes.append(stage)
        assert a.audit_first_bad() is None  # the chain holds every sign-off and withdrawal
        assert len(a.audit_rows(("signoff.withdraw",))) == outcomes.count("validated")
    finally:
        a.close()
        b.close()


def test_two_admins_rolling_back_at_once_the_loser_is_told_it_was_done(tmp_path, backend):
    """Two replicas on one database, two admins rolling churn:1 back at once: one does it;
    the other's 409 says it was rolled back already, by whom, when and why, not that only a
    production version can be rolled back."""
    url = backend.database_url() or ""
    a = Registry(MetadataStore.for_home(tmp_path, url))
    b = Registry(MetadataStore.for_home(tmp_path, url))
    try:
        a.create_version("churn", digest_of("churn"), 1, manifest("churn"), "ana", [])
        a.stage_set(a.version_id("churn", 1), "production", "agent", "", "churn:1")
        ours, theirs = StageManager(a, Policy()), StageManager(b, Policy())
        barrier, got = threading.Barrier(2), {}

        def run(user, stages):
            barrier.wait()
            who = {"user": user, "roles": ["admin"]}
            try:
                got[user] = stages.transition("churn", 1, who, "rollback", f"{user}: errors up")
            except Conflict as e:
                got[user] = e

        threads = [threading.Thread(target=run, args=u) for u in (("ada", ours), ("bo", theirs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        (winner,) = [u for u, out in got.items() if out == {"stage": "rollback"}]
        (loser,) = [out for out in got.values() if isinstance(out, Conflict)]
        (row,) = [h for h in a.stage_history(a.version_id("churn", 1)) if h["stage"] == "rollback"]
        assert (row["by"], loser.status, loser.code) == (winner, 409, "wrong_stage")
        assert loser.message == (
            f"churn:1 was rolled back already, by {winner} at {when_text(row['since'])} "
            f"('{winner}: errors up'); nothing was done."
        )
        # and a second click later is told the same
        with pytest.raises(Conflict) as again:
            ours.transition("churn", 1, {"user": "cy"}, "rollback", "")
        assert again.value.message == loser.message
        assert len(a.audit_rows(("stage.enter",))) == 2  # production, one rollback
    finally:
        a.close()
        b.close()


def test_a_rollback_meant_for_a_version_that_left_production_is_told_how(tmp_path, backend):
    """A rollback naming churn:1 after churn:2 replaced it (the admin saw churn:1 in
    production) is refused with who replaced it and when, not applied to churn:2; a version
    that never reached production is told so."""
    r = Registry(MetadataStore.for_home(tmp_path, backend.database_url() or ""))
    try:
        for n in (1, 2):
            r.create_version("churn", digest_of(f"churn{n}"), n, manifest("churn"), "ana", [])
        r.stage_set(r.version_id("churn", 1), "production", "agent", "", "churn:1")
        r.stage_set(r.version_id("churn", 1), "archived", "ada", "replaced by version 2", "c:1")
        r.stage_set(r.version_id("churn", 2), "production", "ada", "", "churn:2")
        stages, bo = StageManager(r, Policy()), {"user": "bo", "roles": ["admin"]}
        with pytest.raises(Conflict) as refused:
            stages.transition("churn", 1, bo, "rollback", "errors up")
        (row,) = [h for h in r.stage_history(r.version_id("churn", 1)) if h["stage"] == "archived"]
        assert (refused.value.status, refused.value.code) == (409, "wrong_stage")
        assert refused.value.message == (
            "churn:1 is no longer in production: it was archived, by ada at "
            f"{when_text(row['since'])} "
            "('replaced by version 2'); nothing was done."
        )
        # the time as every message writes one: to the second, in UTC, ending in Z
        assert re.search(r" at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(", refused.value.message)
        r.create_version("churn", digest_of("churn3"), 3, manifest("churn"), "ana", [])
        r.stage_set(r.version_id("churn", 3), "canary", "ada", "", "churn:3")
        with pytest.raises(Conflict) as refused:
            stages.transition("churn", 3, bo, "rollback", "")
        assert refused.value.message.startswith("churn:3 is canary, not in production; only")
        # nothing moved: churn:2 still serves, and no rollback was recorded
        assert [r.version_stage(r.version_id("churn", n)) for n in (1, 2, 3)] == [
            "archived",
            "production",
            "canary",
        ]
        assert not any(
            h["stage"] == "rollback"
            for n in (1, 2, 3)
            for h in r.stage_history(r.version_id("churn", n))
        )
    finally:
        r.close()
