"""Token expiry and last use, at a central whose policy says `[tokens] max_age = "7d"`: a
token stops by itself (401 token_expired, saying whose and how to get another), the policy's
max age is the default and the bound, and `token list` tells IT which tokens are still used."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from secrets import token_urlsafe

import pytest
from agent_support import assert_error
from support import RunningAgent, until

POLICY = """
[intake]
revalidate = false

[tokens]
max_age = "7d"
"""


@pytest.fixture(scope="module")
def central(tmp_path_factory, backend):
    """One central for the module; its policy file lies outside its home, so `token create`
    finds it through the runtime file of the central serving that home. It is started from
    the policy's directory with a relative --policy, as an admin would: the commands, run
    from elsewhere, still find it (the runtime file named it relative to central's cwd)."""
    root = tmp_path_factory.mktemp("tokens")
    (root / "central-policy.toml").write_text(POLICY)
    a = RunningAgent(
        root / "home", root / "rt", ["--role", "central", "--policy", "central-policy.toml"],
        database_url=backend.database_url(),
    )  # fmt: skip
    cwd = os.getcwd()
    os.chdir(root)
    try:
        a.start()
    finally:
        os.chdir(cwd)
    yield a
    a.stop()


def listed(central, *args) -> dict[str, dict]:
    """`token list --json`, by user (each test uses users of its own)."""
    out = central.cli("token", "list", "--json", *args)
    assert out.returncode == 0, out.stderr
    return {row["user"]: row for row in map(json.loads, out.stdout.splitlines())}


def test_a_token_works_until_it_expires_then_is_401_token_expired(central):
    """A CI job's token made to expire: it works, its use is noted, and once past its expiry
    every call is 401 token_expired naming the user, when, and the command for a new one."""
    # Given a token that expires in 20 seconds (over HTTP: made and used at once; the listing
    # below is a command, which a loaded machine takes seconds to start)
    status, made = central.request(
        "POST", "/api/v1/tokens", {"user": "ci-job", "roles": ["analyst"], "expires": "20s"}
    )
    assert status == 201 and made["expires"], made
    # When it is used before then, it works and says when it expires
    status, me = central.request("GET", "/api/v1/whoami", token=made["token"])
    assert status == 200, me
    assert (me["user"], me["expires"]) == ("ci-job", made["expires"])
    # and `token list` shows its last use (the first use in this process: written at once,
    # beside the request, which does not wait for it)
    assert until(lambda: listed(central)["ci-job"]["last_used"], timeout=20, what="last use")
    row = listed(central)["ci-job"]
    assert not row["expired"], row
    assert row["expires"] == made["expires"]
    # Then, once past it, the same call is refused in the one error shape
    assert until(
        lambda: central.request("GET", "/api/v1/whoami", token=made["token"])[0] == 401,
        timeout=60,
        what="the token to expire",
    )
    status, body = central.request("GET", "/api/v1/models", token=made["token"])
    err = assert_error(status, body, 401, "token_expired")
    when = datetime.fromisoformat(made["expires"]).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert err["message"] == f"The token of ci-job expired at {when}.", err
    assert err["hint"] == (
        "Ask your admin for a new token (jupyter handoff token create --user ci-job "
        "--role analyst --expires PERIOD, within central's [tokens] max_age of 7d)."
    )
    # and `token list` says it expired, with the time it was last used
    lines = central.cli("token", "list").stdout.splitlines()
    (line,) = [x for x in lines if x.split()[1] == "ci-job"]
    assert line.endswith("  expired") and f"expires {when}" in line, line
    assert "last used never" not in line, line


def test_the_policys_max_age_is_the_default_and_the_longest(central):
    """`[tokens] max_age = "7d"`: a token made without --expires gets seven days, from the CLI
    (which reads the policy the running central was started with) and over HTTP; a longer
    --expires is refused in one line, exit 2, nothing made."""
    out = central.cli("token", "create", "--user", "rita", "--role", "reviewer")
    assert out.returncode == 0, out.stderr
    row = listed(central)["rita"]
    life = datetime.fromisoformat(row["expires"]) - datetime.fromisoformat(row["created"])
    assert timedelta(days=7) - timedelta(minutes=1) < life <= timedelta(days=7), row
    assert row["last_used"] is None
    assert "last used never" in central.cli("token", "list").stdout
    # A longer expiry: one line naming the policy, exit 2, no token
    out = central.cli("token", "create", "--user", "ron", "--role", "reviewer", "--expires", "30d")
    assert (out.returncode, out.stdout) == (2, ""), out
    assert out.stderr.splitlines()[0] == (
        "An expiry of 30d is longer than the policy's [tokens] max_age of 7d."
    ), out.stderr
    assert "ron" not in listed(central)
    # Over HTTP the same rule: 400 expires_too_long, and the default when none is asked
    status, body = central.request(
        "POST", "/api/v1/tokens", {"user": "ron", "roles": ["reviewer"], "expires": "8d"}
    )
    assert_error(status, body, 400, "expires_too_long")
    status, made = central.request("POST", "/api/v1/tokens", {"user": "ron", "roles": ["admin"]})
    assert status == 201 and made["expires"] == listed(central)["ron"]["expires"], made
    # The audit row of each creation says when the token expires
    status, log = central.request("GET", "/api/v1/audit?action=token.create&limit=1000")
    assert status == 200, log
    made_for = {e["subject"]: json.loads(e["payload"]) for e in log["entries"]}
    assert made_for["rita"]["expires"] == row["expires"], made_for
    assert made_for["ron"]["expires"] == made["expires"]


def test_the_policys_max_age_binds_tokens_made_before_it(central, tmp_path):
    """IT sets `[tokens] max_age = "7d"` on a central whose tokens were made without it: one
    never expiring, one for 30 days. Each is in force until seven days from its creation,
    which `token list` and whoami show, and past that it is 401 token_expired saying why."""
    # Given two tokens made under an older policy (no max_age; then a 30d one)
    older = {"none": tmp_path / "none.toml", "30d": tmp_path / "30d.toml"}
    older["none"].write_text("[intake]\nrevalidate = false\n")
    older["30d"].write_text('[tokens]\nmax_age = "30d"\n')
    made = {}
    for user, policy, more in (("old-ci", "none", ()), ("old-bot", "30d", ("--expires", "30d"))):
        args = ("--user", user, "--role", "analyst", "--policy", str(older[policy]), *more)
        out = central.cli("token", "create", *args)
        assert out.returncode == 0, out.stderr
        made[user] = out.stdout.strip()
    stored = listed(central, "--policy", str(older["none"]))
    assert stored["old-ci"]["expires"] is None and stored["old-bot"]["expires"], stored
    # When central's policy (7d) reads them: each ends seven days after its creation
    rows = listed(central)
    for user in made:
        row = rows[user]
        life = datetime.fromisoformat(row["expires"]) - datetime.fromisoformat(row["created"])
        assert (life, row["by_max_age"], row["expired"]) == (timedelta(days=7), True, False), row
        status, me = central.request("GET", "/api/v1/whoami", token=made[user])
        assert status == 200 and (me["expires"], me["max_age"]) == (row["expires"], "7d"), me
    line = next(x for x in central.cli("token", "list").stdout.splitlines() if " old-ci " in x)
    when = datetime.fromisoformat(rows["old-ci"]["expires"]).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"expires {when} (max_age)  last used " in line, line
    # a token whose own expiry comes first keeps it
    out = central.cli("token", "create", "--user", "new-ci", "--role", "analyst", "--expires", "1d")
    assert out.returncode == 0, out.stderr
    row, own = listed(central)["new-ci"], listed(central, "--policy", str(older["none"]))["new-ci"]
    assert (row["by_max_age"], row["expires"]) == (False, own["expires"]), row

    # Given they were made eight days ago
    created = (datetime.now(UTC) - timedelta(days=8)).isoformat(timespec="microseconds")
    for user in made:
        central.sql('UPDATE tokens SET created = :c WHERE "user" = :u', c=created, u=user)
    ended = (datetime.fromisoformat(created) + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Then each is refused, saying whose, when and why, in the one error shape
    for user in made:
        status, body = central.request("GET", "/api/v1/models", token=made[user])
        err = assert_error(status, body, 401, "token_expired")
        assert err["message"] == (
            f"The token of {user} expired at {ended}: central's [tokens] max_age of 7d counts "
            "from its creation."
        ), err
        assert "--expires PERIOD, within central's [tokens] max_age" in err["hint"]
    rows = listed(central)
    assert rows["old-ci"]["expired"] and rows["old-bot"]["expired"], rows
    line = next(x for x in central.cli("token", "list").stdout.splitlines() if " old-bot " in x)
    assert line.endswith("  expired") and f"expires {ended} (max_age)" in line, line


@pytest.mark.parametrize("given", ["soon", "0", "3 days", "7x", "99999999d", "10"])
def test_a_bad_expiry_is_one_line_and_exit_2(central, given):
    """A bare number is refused too: 10 would be ten seconds to the agent, days to some."""
    out = central.cli("token", "create", "--user", "bad", "--role", "analyst", "--expires", given)
    assert (out.returncode, out.stdout) == (2, ""), out
    assert out.stderr.splitlines()[0] == (
        f"Expiry {given!r} is not a period with its unit, up to a century: write e.g. "
        "--expires 30m, 24h or 90d."
    ), out.stderr


def test_a_bad_expiry_over_http_is_400(central):
    for expires, code in (("soon", "bad_expires"), (5, "bad_request")):
        body = {"user": "bad", "roles": ["analyst"], "expires": expires}
        status, answer = central.request("POST", "/api/v1/tokens", body)
        assert_error(status, answer, 400, code)


def test_a_revoked_token_is_listed_with_all(central):
    central.make_token("gone", "analyst")
    assert central.cli("token", "revoke", "--user", "gone").returncode == 0
    assert "gone" not in listed(central)
    assert listed(central, "--all")["gone"]["revoked"] is True
    lines = central.cli("token", "list", "--all").stdout.splitlines()
    (line,) = [x for x in lines if " gone " in x]
    assert line.endswith("  revoked"), line


def test_a_local_agent_says_central_refuses_its_expired_token(central):
    """What a local agent's stage sync says (status, `%mlops agent status`, history) when its
    central token expired: central's own reason, not a bare 401."""
    from handoff_agent.forwarding.central import CentralDestination

    status, made = central.request(
        "POST", "/api/v1/tokens", {"user": "laptop", "roles": ["analyst"], "expires": "1s"}
    )
    assert status == 201, made
    assert until(
        lambda: central.request("GET", "/api/v1/whoami", token=made["token"])[0] == 401,
        timeout=60,
        what="the token to expire",
    )
    dest = CentralDestination(url=central.url, token=made["token"], secret=token_urlsafe(32))
    assert dest.status({"name": "churn", "version": 1}) is None
    assert dest.token_refused.startswith(
        "Central refuses this agent's token (401): The token of laptop expired at "
    ), dest.token_refused
    assert "c.CentralDestination.token" in dest.token_refused


def test_a_policy_with_a_bad_max_age_stops_token_create(tmp_path, central):
    policy = tmp_path / "bad.toml"
    policy.write_text('[tokens]\nmax_age = "forever"\n')
    args = ("--user", "x", "--role", "analyst", "--policy", str(policy))
    out = central.cli("token", "create", *args)
    assert (out.returncode, out.stdout) == (2, ""), out
    assert out.stderr.strip() == (
        f'{policy}: [tokens] max_age must be a period such as "90d", "24h" or "30m", '
        "not 'forever'."
    )


def test_a_request_hashes_its_token_once_for_the_lookup_and_the_use(tmp_path):
    """`BaseHandler.authenticate` hashes the token it is given once: the lookup takes that
    hash (a raw token finds nothing) and the use is noted under the same one."""
    from handoff_agent import tokens
    from handoff_agent.store.metadata import MetadataStore

    store = MetadataStore.for_home(tmp_path)
    try:
        made = tokens.issue(store, "hash-once", ["analyst"])["token"]
        hashed = tokens.token_hash(made)
        assert tokens.lookup(store, made) is None
        assert tokens.lookup(store, hashed) == {"user": "hash-once", "roles": ["analyst"]}
        tokens.note_use(store, hashed)
        assert store.tokens()[0]["last_used"] is not None
    finally:
        store.close()


def test_the_expired_hint_names_max_age_only_when_the_policy_sets_one(tmp_path):
    """Without ``[tokens] max_age`` the 401 token_expired hint says only to ask for a new
    token with --expires; with one, it names its value."""
    from handoff_agent import tokens
    from handoff_agent.errors import Unauthorized
    from handoff_agent.store.metadata import MetadataStore

    store = MetadataStore.for_home(tmp_path)
    try:
        made = tokens.issue(store, "short", ["analyst"], expires="1s")["token"]
        hashed = tokens.token_hash(made)

        def refused(max_age: str) -> Unauthorized | None:
            try:
                tokens.lookup(store, hashed, max_age)
            except Unauthorized as e:
                return e
            return None

        assert until(lambda: refused(""), timeout=30, what="the token to expire")
        new = "Ask your admin for a new token (jupyter handoff token create --user short --role"
        assert refused("").hint == f"{new} analyst --expires PERIOD)."
        assert refused("30d").hint == (
            f"{new} analyst --expires PERIOD, within central's [tokens] max_age of 30d)."
        )
    finally:
        store.close()
