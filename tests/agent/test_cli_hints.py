"""The agent's hints as a shell prints them: a command or flag where the API names a route, a
header or the event stream (``cli_hints.cli_hint``, the one CLI-side mapping). The commands
that print them run against real agents in test_inventory_dossier; these are the words."""

from __future__ import annotations

import pytest

from handoff_agent.cli_hints import Asked, cli_hint

URL = "http://central.example:8766"
# The agent's own hints, as its handlers and store write them
MODELS = "List models with GET /api/v1/models."
VERSIONS = "List its versions with GET /api/v1/models/churn/versions."
LOAD_TEST = (
    "See GET /api/v1/models/churn/versions/2 (validation). Push a faster version, or once the "
    "cause is fixed an admin re-runs it: POST /api/v1/models/churn/versions/2/validation. The "
    "limits are [deploy.loadtest] in central's policy."
)


@pytest.mark.parametrize(
    ("code", "hint", "asked", "said"),
    [
        ("not_found", MODELS, Asked("central"),
         "`jupyter handoff inventory --agent central` lists the models."),
        ("not_found", MODELS, Asked("local"),
         "`jupyter handoff inventory --agent local` lists the models."),
        ("not_found", MODELS, Asked("central", URL),
         f"`jupyter handoff inventory --url {URL}` lists the models."),
        ("not_found", VERSIONS, Asked("central"),
         "`jupyter handoff audit log churn --action version.create --agent-role central` "
         "lists its versions."),
        ("not_found", VERSIONS, Asked("local"),
         "`jupyter handoff audit log churn --action version.create` lists its versions."),
        ("load_test_failed", LOAD_TEST, Asked("central"),
         "See `jupyter handoff deployment churn` (validations). Push a faster version, or once "
         "the cause is fixed an admin re-runs it: POST /api/v1/models/churn/versions/2/"
         "validation on central's HTTP API. The limits are [deploy.loadtest] in central's "
         "policy."),
        ("load_test_pending",
         'The policy waits for it ([deploy.loadtest] block_on = "not_passed"); watch GET '
         "/api/v1/models/churn/versions/2 (validation).", Asked("central"),
         'The policy waits for it ([deploy.loadtest] block_on = "not_passed"); watch '
         "`jupyter handoff deployment churn` (validations)."),
        # a sign-off the guardrails refuse: the canary is watched with `deployment`
        ("bake_not_clean", "Wait until GET /api/v1/models/NAME/deployment shows the canary "
         "ready to promote, or set [deploy] promote_after_bake = false.", Asked("central"),
         "Wait until `jupyter handoff deployment NAME` shows the canary ready to promote, or "
         "set [deploy] promote_after_bake = false."),
        ("shadow_not_passed", "Send traffic and wait until GET /api/v1/models/NAME/deployment "
         "shows the shadow passed, or set [deploy] shadow_gate = false.", Asked("central", URL),
         f"Send traffic and wait until `jupyter handoff deployment NAME --url {URL}` shows the "
         "shadow passed, or set [deploy] shadow_gate = false."),
        ("report_pending",
         "Reports are written when every check has finished; watch /api/v1/events.", Asked(),
         "Reports are written when every check has finished: run the command again then."),
        ("not_central", "Ask the central agent: GET /api/v1/keys there.", Asked("local"),
         "Ask central: leave out --agent local, or give central's URL with --url."),
        # the notebook's words, which a shell cannot run
        ("no_lineage", "Give a watched source (its path, URL or id), a fingerprint (8+ hex "
         "digits) or a model name; `%mlops watch` lists the sources.", Asked("central"),
         "Give a watched source (its path, URL or id), a fingerprint (8+ hex digits) or a "
         "model name; `jupyter handoff watch NAME --agent central` lists a model's sources."),
        ("local_only", "Register the watch from the notebook with %mlops watch.",
         Asked("central"), "Watch it at the local agent: leave out --agent central (or use "
         "%mlops watch in the notebook)."),
        # a hint with nothing of HTTP in it is the agent's, as written
        ("not_found", "`jupyter handoff trust list` shows it.", Asked(),
         "`jupyter handoff trust list` shows it."),
        ("stage_moved", "Look at it again: it waits for sign-offs for canary.", Asked(),
         "Look at it again: it waits for sign-offs for canary."),
    ],
)  # fmt: skip
def test_a_route_in_a_hint_becomes_the_command_that_does_the_same(code, hint, asked, said):
    assert cli_hint(code, hint, asked) == said


def test_a_busy_database_says_to_run_the_command_again_not_to_read_a_header():
    """SQLite still locked after its busy timeout: the agent's 503 names Retry-After."""
    import sqlite3

    from sqlalchemy import exc

    from handoff_agent.store.engine import unavailable

    locked = exc.OperationalError("INSERT …", {}, sqlite3.OperationalError("database is locked"))
    busy = unavailable(locked)
    assert busy.code == "database_busy" and "Retry-After header" in busy.hint
    said = cli_hint(busy.code, busy.hint)
    assert said.startswith("Run the command again in a few seconds.") and "Retry" not in said
    assert "`jupyter handoff status`" in said
