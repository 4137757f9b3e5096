"""What the analyst sees in a real notebook (nbclient, one kernel) while central waits for a
sign-off, and once central refuses the local agent's central token (it expired):

- ``%mlops show``'s text/plain (and HTML) says what central waits for: which stage, whose
  sign-off, in the words the history and the push widget use (``review_view.waiting_for``);
- ``%mlops history`` says, one line under its title, that central refuses the token and why;
- ``%mlops dossier``, relayed by the local agent, is one ``UsageError:`` line naming the
  agent's token (not the analyst's) and the setting that fixes it.

Withdrawing a sign-off has no magic or notebook call (the CLI's ``signoff --withdraw`` and the
panel's button do it), so it has no notebook test here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import nbformat
import pytest
from nbclient import NotebookClient
from support import churn_at_central, until

SECRET = "first-secret-3kT9qLm2VxZp7RwY8nB4"
WAITS = "waits for 1 reviewer sign-off to become approved"


@pytest.fixture(scope="module")
def site(tmp_path_factory, backend):
    """churn:1 validated at central, waiting for a reviewer's sign-off; the local agent holds
    a central token of its own (laptop's)."""
    tmp = tmp_path_factory.mktemp("central-token-nb")
    with churn_at_central(tmp, SECRET, local_token=("laptop", "analyst")) as (central, local):

        def waiting():  # the local agent has the stage, and relays central's review entry
            stage = local.request("GET", "/api/v1/models/churn/versions/1")[1].get("stage")
            status, body = local.request("GET", "/api/v1/models/churn/reviews")
            return stage == "validated" and status == 200 and body["reviews"]

        until(waiting, what="churn:1 validated, waiting for a sign-off, seen locally")
        yield central, local, tmp


def _expire(central, user: str) -> str:
    """``user``'s tokens at central reach their expiry (a minute ago), as time would bring
    it; returns the time as central words it."""
    when = (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0)
    central.sql('UPDATE tokens SET expires = :w WHERE "user" = :u', w=when.isoformat(), u=user)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def notebook(site):
    """One kernel: ``%mlops show`` while the token works; then, once it has expired and the
    local agent noticed, ``%mlops history`` and ``%mlops dossier``."""
    central, local, tmp = site
    before = ["%load_ext jupyter_handoff", "%mlops show churn:1"]
    after = ["%mlops history churn", f"%mlops dossier churn:1 --out {tmp / 'd.zip'}"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in before + after])
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp)}},
    )
    with client.setup_kernel(env={**local.env}):
        for i in range(len(before)):
            client.execute_cell(nb.cells[i], i)
        when = _expire(central, "laptop")

        def noticed():
            problems = local.request("GET", "/api/v1/outbox")[1].get("problems") or []
            return any("expired" in p for p in problems)

        until(noticed, what="the local agent noticing central refuses its expired token")
        for i in range(len(before), len(nb.cells)):
            client.execute_cell(nb.cells[i], i)
    return nb, when


def _outputs(nb, source_start: str) -> list:
    (cell,) = [c for c in nb.cells if c.source.startswith(source_start)]
    return cell.outputs


def _mime(outputs, mime: str) -> str:
    return "".join(str(o.get("data", {}).get(mime, "")) for o in outputs if "data" in o)


def test_show_as_text_says_what_central_waits_for(notebook):
    """Where no widget renders (nbconvert --to text, a terminal, GitHub's text view), the
    version's text says the stage it waits for and whose sign-off; the HTML says it too."""
    nb, _ = notebook
    outputs = _outputs(nb, "%mlops show")
    assert not [o for o in outputs if o["output_type"] in ("error", "stream")], outputs
    lines = _mime(outputs, "text/plain").splitlines()
    assert lines[0].startswith("Version('churn', 1, status="), lines
    assert lines[0].endswith("at stage validated by central"), lines
    assert lines[1] == f"  {WAITS}", lines
    assert WAITS in _mime(outputs, "text/html")


def test_history_says_central_refuses_the_expired_token_in_one_line(notebook):
    nb, when = notebook
    outputs = _outputs(nb, "%mlops history")
    assert not [o for o in outputs if o["output_type"] in ("error", "stream")], outputs
    text = _mime(outputs, "text/plain")
    said = [line for line in text.splitlines() if "expired" in line]
    assert said == [
        f"  Central refuses this agent's token (401): The token of laptop expired at {when}. "
        "Stages and sign-offs no longer come back to the notebook. Set "
        "c.CentralDestination.token to a token central issued (`jupyter handoff token "
        "create` there) and restart the agent."
    ], text
    assert text.splitlines()[1] == said[0], text  # under the title, above the versions
    assert f"The token of laptop expired at {when}." in _mime(outputs, "text/html")


def test_dossier_when_central_refuses_the_agents_token_is_one_line(notebook):
    """Central's 401 is about the local agent's central token, not the analyst's: one
    ``UsageError:`` line saying so and why, and the setting that fixes it."""
    nb, when = notebook
    outputs = _outputs(nb, "%mlops dossier")
    text = "".join(o.get("text", "") for o in outputs)
    assert outputs and {o["output_type"] for o in outputs} == {"stream"}, outputs
    assert {o["name"] for o in outputs} == {"stderr"}, outputs
    first, *rest = text.strip().splitlines()
    assert first.startswith("UsageError: ") and first.endswith("(central_token)"), text
    assert (
        f"Central refused this agent's central token (The token of laptop expired at {when}.)"
        in first
    ), text
    assert len(rest) == 1 and "c.CentralDestination.token" in rest[0], text
    for frame in ("Traceback", 'File "', "---->", "/api/"):
        assert frame not in text, text
