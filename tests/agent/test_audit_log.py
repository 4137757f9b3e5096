"""Reading the audit log: ``GET /api/v1/audit`` and ``jupyter handoff audit log``, filtered
and paged, for reviewers and admins; an export checks offline with ``audit verify --file``
and a tampered one names its entry.

One local agent and one central for the module: pushes hand two models off, and a reviewer
signs one off with a comment, so both chains hold real rows."""

from __future__ import annotations

import itertools
import json
import urllib.parse
from datetime import datetime

import pytest
from agent_support import NO_CHECKS, assert_error
from support import handoff_cli, until
from test_audit_chain import push_delivered
from test_pipeline_central import start_pair
from test_pipeline_delivery import central_stage_of

COMMENT = "looks right \x1b[31m"  # a terminal escape: shown inert in the CLI's line


@pytest.fixture(scope="module")
def site(tmp_path_factory, backend):
    tmp = tmp_path_factory.mktemp("audit-log")
    local, central = start_pair(tmp, revalidate=False, local_args=[NO_CHECKS])
    try:
        push_delivered(local, "churn", 1)
        push_delivered(local, "credit", 2)
        validated = lambda: (central_stage_of(central, "churn") or [None])[0] == "validated"  # noqa: E731
        until(validated, timeout=120, what="churn validated at central")
        bob = central.make_token("bob", "reviewer")
        ann = central.make_token("ann", "analyst")
        status, body = central.request(
            "POST",
            "/api/v1/models/churn/versions/1/signoffs",
            {"decision": "approve", "comment": COMMENT},
            token=bob,
        )
        assert status == 201, body
        yield {"local": local, "central": central, "bob": bob, "ann": ann, "tmp": tmp}
    finally:
        local.stop()
        central.stop()


def entries(agent, token=True, **query) -> list[dict]:
    """Every matching entry, page by page as a client walks them."""
    out, after = [], 0
    while True:
        q = urllib.parse.urlencode({**query, "after": after})
        status, body = agent.request("GET", f"/api/v1/audit?{q}", token=token)
        assert status == 200, body
        out += body["entries"]
        if "next" not in body:
            return out
        after = body["next"]


def test_entries_come_in_chain_order_with_their_hashes(site):
    rows = entries(site["central"], limit=1000)
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert set(rows[0]) == {
        *("seq", "time", "actor", "action", "subject", "payload", "prev_hash", "hash")
    }
    assert rows[0]["prev_hash"] == "0" * 64
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(rows))
    status, body = site["central"].request("GET", "/api/v1/audit?limit=1000")
    assert status == 200 and body["head"]["seq"] >= rows[-1]["seq"]


def test_a_model_name_matches_its_versions_and_a_ref_only_that_version(site):
    central = site["central"]
    churn = entries(central, subject="churn")
    assert {r["subject"] for r in churn} >= {"churn:1"}
    assert all(r["subject"] in ("churn", "churn:1") for r in churn)
    assert "signoff" in {r["action"] for r in churn}
    assert all(r["subject"] == "churn:1" for r in entries(central, subject="churn:1"))
    assert entries(central, subject="chur") == []  # a name, not a prefix
    credit = entries(central, subject="credit")
    assert credit and all(r["subject"].startswith("credit") for r in credit)
    # names are case-sensitive (Credit is another model), on SQLite as on PostgreSQL
    assert entries(central, subject="CHURN") == [] and entries(central, action="SIGNOFF") == []


def test_actor_and_action_pick_the_sign_off_with_its_comment(site):
    central = site["central"]
    bobs = entries(central, actor="bob")  # his sign-off, and the stage it moved churn:1 to
    assert [(r["action"], r["subject"]) for r in bobs] == [
        ("signoff", "churn:1"),
        ("stage.enter", "churn:1"),
    ]
    row = bobs[0]
    assert json.loads(row["payload"])["comment"] == COMMENT
    assert entries(central, action="signoff") == [row]
    assert json.loads(bobs[1]["payload"])["stage"] == "approved"
    stage = entries(central, action="stage")  # an action's kind: stage.enter, stage.mirror
    assert stage and all(r["action"].startswith("stage.") for r in stage)
    assert entries(central, actor="bob", subject="credit") == []
    assert entries(central, actor="BOB") == bobs  # user names count case-insensitively


def test_pages_walk_every_entry_once(site):
    central = site["central"]
    everything = entries(central, limit=1000)
    status, first = central.request("GET", "/api/v1/audit?limit=2")
    assert status == 200 and len(first["entries"]) == 2 and first["next"] == 2
    assert entries(central, limit=2)[: len(everything)] == everything
    status, last = central.request("GET", f"/api/v1/audit?after={everything[-1]['seq']}")
    assert status == 200 and "next" not in last


def test_since_and_until_take_iso_times_and_epoch_seconds(site):
    central = site["central"]
    rows = entries(central, limit=1000)
    middle = rows[len(rows) // 2]
    stamp = middle["time"]
    later = entries(central, since=stamp)
    assert later[0]["time"] >= stamp and middle in later
    assert all(r["time"] >= stamp for r in later)
    earlier = entries(central, until=stamp)
    assert earlier and all(r["time"] < stamp for r in earlier)
    epoch = datetime.fromisoformat(stamp).timestamp()
    assert entries(central, since=f"{epoch:.6f}") == later
    naive_utc = stamp.replace("+00:00", "")  # no zone: UTC
    assert entries(central, since=naive_utc) == later
    assert entries(central, since="2000-01-01", until="2000-01-02") == []


def test_the_local_agent_answers_for_its_own_chain(site):
    rows = entries(site["local"], subject="credit")
    actions = [r["action"] for r in rows]
    assert "version.create" in actions and "forward.delivered" in actions
    assert all(r["subject"].startswith("credit:") for r in rows)


def test_an_analyst_may_not_read_the_audit_log(site):
    central = site["central"]
    status, body = central.request("GET", "/api/v1/audit", token=site["ann"])
    err = assert_error(status, body, 403, "forbidden_role")
    assert err["message"] == (
        "ann (analyst) may not read the audit log: that needs the reviewer or admin role."
    )
    assert entries(central, token=site["bob"], actor="bob")  # a reviewer may
    status, body = central.request("GET", "/api/v1/audit", token=False)
    assert_error(status, body, 401, "unauthorized")


TIME_HINT = "Give an ISO time (2026-12-07, 2026-12-07T10:00:00Z; no zone is UTC) or epoch seconds."
LIMIT_HINT = "Give limit as a whole number from 1 to 1000, or leave it out for 100."
AFTER_HINT = "after is the `next` of the page before; leave it out to start at the first."


@pytest.mark.parametrize(
    ("query", "says", "hint"),
    [
        ("since=yesterday", "since is not a time: 'yesterday'.", TIME_HINT),
        ("until=2026-13-01", "until is not a time: '2026-13-01'.", TIME_HINT),
        (
            "since=2026-02-01&until=2026-01-01",
            "until must be later than since.",
            "since counts from its time on and until stops just before its own: e.g. "
            "since=2026-12-01&until=2026-12-02 for one day.",
        ),
        ("limit=0", "limit must be between 1 and 1000.", LIMIT_HINT),
        ("limit=1001", "limit must be between 1 and 1000.", LIMIT_HINT),
        ("limit=ten", "limit must be a whole number (0, 1, 2 …), not 'ten'.", LIMIT_HINT),
        ("after=-1", "after must be a whole number (0, 1, 2 …), not '-1'.", AFTER_HINT),
        (
            "subject=" + "x" * 201,
            "subject must be at most 200 characters, without control characters.",
            "e.g. subject=churn or subject=churn:3, actor=alice, action=signoff",
        ),
        (
            "actor=bob&actor=ann",
            "actor is given 2 times; the audit log takes each parameter once.",
            "Ask once for each actor (e.g. actor=bob), or leave actor out to see them all.",
        ),
        (
            "subject=churn&action=stage&subject=credit&subject=",
            "subject is given 3 times; the audit log takes each parameter once.",
            "Ask once for each subject (e.g. subject=churn), or leave subject out to see them all.",
        ),
        (
            "limit=5&limit=10",
            "limit is given 2 times; the audit log takes each parameter once.",
            "Give limit once.",
        ),
        *[
            (
                f"{query}",
                f"{query.partition('=')[0]} is empty (once control characters are removed).",
                f"Give {query.partition('=')[0]} a value, or leave "
                f"{query.partition('=')[0]} out to see every entry.",
            )
            # given but empty, or reduced to nothing by tornado: not the whole log
            for query in ("subject=", "subject=%00", "actor=%20%01", "since=", "until=%00%09")
        ],
        (
            "subjet=churn",
            "The audit log has no parameter 'subjet'.",
            "Its parameters are subject, actor, action, since, until, limit, after.",
        ),
    ],
)
def test_a_bad_filter_is_a_400_saying_which_and_what_to_give(site, query, says, hint):
    """Each in the one error shape, with a hint in a user's words; a parameter given twice
    is refused (of two actors one would count, silently), not half-applied."""
    status, body = site["central"].request("GET", f"/api/v1/audit?{query}")
    code = (
        "repeated_parameter"
        if " is given " in says
        else "bad_filter"
        if " is empty " in says
        else None
    )
    err = assert_error(status, body, 400, "unknown_parameter" if "no parameter" in says else code)
    assert (err["message"], err["hint"]) == (says, hint)


def test_a_parameter_given_once_each_still_combines(site):
    """The refusal is of repeats only: distinct filters still apply together."""
    rows = entries(site["central"], subject="churn", actor="bob")
    assert rows and all(r["actor"] == "bob" and r["subject"].startswith("churn") for r in rows)


# -- the command ----------------------------------------------------------------------------


def cli(site, *args, **env):
    return handoff_cli({**site["central"].env, **env}, "audit", *args)


def test_audit_log_prints_one_line_an_entry(site):
    out = cli(site, "log", "churn", "--agent-role", "central")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    signoff = next(line for line in lines if " signoff " in line)
    row = entries(site["central"], actor="bob")[0]
    assert signoff.split()[0] == str(row["seq"])
    # its time as every message shows one (UTC, to the second); --json keeps it as stored
    assert row["time"].endswith("+00:00") and "." in row["time"]
    assert signoff.split()[1] == row["time"][:19] + "Z"
    assert "bob  signoff  churn:1" in signoff
    assert '"looks right \\u001b[31m"' in signoff and "\x1b" not in out.stdout
    assert "decision=approve" in signoff and "role=reviewer" in signoff
    assert lines[-1].startswith(f"{len(lines) - 1} entries; chain head ")
    first = cli(site, "log", "--agent", "central", "--action", "stage", "--limit", "1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1].startswith("1 entry (more match: --after ")


def test_a_reviewer_reads_it_by_url_and_an_analyst_is_told_why_not(site):
    central = site["central"]
    out = cli(site, "log", "--url", central.url, "--actor", "bob", HANDOFF_TOKEN=site["bob"])
    assert out.returncode == 0, out.stderr
    assert "signoff" in out.stdout
    out = cli(site, "log", "--url", central.url, HANDOFF_TOKEN=site["ann"])
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("ann (analyst) may not read the audit log")


def test_an_export_verifies_offline_and_a_tampered_one_names_its_entry(site):
    out = cli(site, "export", "--agent-role", "central")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and rows[0]["seq"] == 1
    export = site["tmp"] / "audit.jsonl"
    export.write_text(out.stdout)
    ok = cli(site, "verify", "--file", str(export))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    head = rows[-1]
    assert ok.stdout == (
        f"audit: OK ({len(rows)} entries, 1 to {head['seq']}, head {head['hash'][:16]})\n"
    )
    # the sign-off's comment, edited in the file
    tampered = [dict(r) for r in rows]
    i = next(i for i, r in enumerate(tampered) if r["action"] == "signoff")
    tampered[i]["payload"] = tampered[i]["payload"].replace("looks right", "looks wrong")
    export.write_text("".join(json.dumps(r) + "\n" for r in tampered))
    bad = cli(site, "verify", "--file", str(export))
    assert bad.returncode == 1
    assert bad.stdout == (
        f"audit: BROKEN at entry {rows[i]['seq']}: it does not match its hash: it was edited "
        "after it was written.\n"
    )
    # an entry left out
    export.write_text("".join(json.dumps(r) + "\n" for j, r in enumerate(rows) if j != i))
    gap = cli(site, "verify", "--file", str(export))
    assert gap.returncode == 1
    assert gap.stdout.startswith(
        f"audit: BROKEN at entry {rows[i + 1]['seq']}: it does not link to entry "
        f"{rows[i - 1]['seq']} before it"
    )
    export.write_text("not json\n")
    assert cli(site, "verify", "--file", str(export)).stdout == (
        "audit: BROKEN: line 1 is not JSON, or repeats a key.\n"
    )
    # a key added beside the hashed ones, or one repeated (readers differ on which wins)
    first = json.dumps(rows[0])
    for line, says in (
        (first[:-1] + ', "extra": "hidden"}', "is not an audit entry: exactly seq, time"),
        ('{"actor": "mallory", ' + first[1:], "is not JSON, or repeats a key"),
    ):
        export.write_text(line + "\n")
        out = cli(site, "verify", "--file", str(export))
        assert out.returncode == 1 and f"line 1 {says}" in out.stdout, out.stdout


def test_the_home_chain_still_verifies(site):
    out = site["central"].cli("audit", "verify")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("audit: OK (")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["log", "churn", "credit"], "Usage: jupyter handoff audit verify "),
        (["frob"], "Usage: jupyter handoff audit verify "),
        (["verify", "--actor", "bob"], "Usage: jupyter handoff audit verify "),
        (["log", "--file", "x.jsonl"], "Usage: jupyter handoff audit verify "),
        (["log", "--since", "yesterday"], "--since is not a time: 'yesterday'. Give an ISO time"),
        (["log", "--limit", "-3"], "--limit is a whole number from 1 up, not -3: the first N"),
        (["log", "--limit", "0"], "--limit is a whole number from 1 up, not 0: the first N"),
        (["log", "--after", "-1"], "--after is a whole number >= 0 (the last seq a run printed)."),
        (["log", "--agent-role", "elsewhere"], "--agent-role is local or central, not "),
        (["log", "--home", "/tmp"], "audit log asks the running agent: pick it with "),
    ],
)
def test_a_usage_mistake_is_one_line_and_exit_2(site, args, says):
    out = cli(site, *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith(says), out.stderr
