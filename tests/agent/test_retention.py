"""Retention through a real agent: ``jupyter handoff prune`` and ``POST …/prune`` remove the
bundles of old versions nothing needs and say what they freed; a pruned version keeps its
record and reports, its bundle is 410 ``pruned`` (one line, how to bring it back), fsck and
a backup agree, and pushing the same bytes brings the bundle back."""

from __future__ import annotations

import hashlib

import pytest
from agent_support import NO_CHECKS, assert_error
from support import bundle_bytes, handoff_cli, until

from handoff_agent.vocabulary import size_text

MiB = 1 << 20


@pytest.fixture
def pushed(agent_factory):
    """Five versions of churn, a MiB each, checked (no checks: the verdict comes at once),
    on an agent whose one destination (a webhook) is down and forwards only when asked."""
    hook = "http://127.0.0.1:9/hook"
    agent = agent_factory(
        NO_CHECKS,
        "--forward-to",
        "webhook",
        "--HandoffAgent.forward_on=[]",
        f"--WebhookDestination.url={hook}",
        f"--WebhookDestination.allowed_urls=['{hook}']",
        "--WebhookDestination.secret=" + "s" * 32,
    )
    bundles = [bundle_bytes("churn", model=bytes([i]) * MiB) for i in range(1, 6)]
    for number, data in enumerate(bundles, 1):
        status, body = agent.push_bytes("churn", data)
        assert (status, body["version"]) == (201, number), body
    return agent, bundles


def prune(agent, name="churn", **body):
    return agent.request("POST", f"/api/v1/models/{name}/prune", body=body)


def test_prune_frees_old_bundles_keeps_their_records_and_the_same_bytes_come_back(pushed, tmp_path):
    agent, bundles = pushed
    sizes = [len(b) for b in bundles]

    status, out = prune(agent, keep=2, dry_run=True)
    assert status == 200 and out["pruned"] == [1, 2, 3] and out["freed"] == sum(sizes[:3])
    assert agent.request("GET", "/api/v1/models/churn/versions/1/bundle")[0] == 200

    cli = handoff_cli(agent.env, "prune", "--keep", "2")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert cli.stdout.strip() == "churn: pruned versions 1, 2, 3, 3.0 MiB.", cli.stdout
    again = handoff_cli(agent.env, "prune", "churn", "--keep", "2", "--dry-run")
    assert again.stdout.strip() == (
        "churn: nothing to prune (keeps the newest 2 and what is in use)."
    ), again.stdout

    # A pruned version is still there to read, without its bundle.
    status, v1 = agent.request("GET", "/api/v1/models/churn/versions/1")
    assert status == 200 and v1["pruned"] and v1["reports"] and v1["status"] == "passed"
    status, body = agent.request("GET", "/api/v1/models/churn/versions/1/bundle")
    err = assert_error(status, body, 410, "pruned")
    assert err["message"].startswith("churn:1's bundle was pruned on "), err
    assert err["hint"] == "Push the same model again to bring the bundle back."
    for path in ("/report?format=json", "/report?format=html"):
        assert agent.request("GET", "/api/v1/models/churn/versions/1" + path)[0] == 200
    forward = {"to": "webhook"}
    status, body = agent.request("POST", "/api/v1/models/churn/versions/2/forward", body=forward)
    assert_error(status, body, 410, "pruned")
    assert agent.request("GET", "/api/v1/models/churn/versions/4/bundle")[0] == 200
    # A delivery still to go keeps its version's bundle (the webhook is down: it retries).
    assert agent.request("POST", "/api/v1/models/churn/versions/4/forward", body=forward)[0] == 202
    assert prune(agent, keep=1)[1]["pruned"] == []
    audit = agent.sql("select actor, subject from audit where action = 'version.prune'")
    assert sorted(r["subject"] for r in audit) == ["churn:1", "churn:2", "churn:3"]

    # The registry and the store agree, and a backup carries what is left.
    fsck = agent.cli("fsck")
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    backup = agent.cli("backup", str(tmp_path / "backup"), *agent.blob_args())
    assert backup.returncode == 0, backup.stdout + backup.stderr

    # The same bytes pushed again: the same version, with its bundle back.
    status, body = agent.push_bytes("churn", bundles[0], **{"Expect": "100-continue"})
    assert (status, body["version"], body["created"]) == (200, 1, False), body
    status, headers, _ = agent.request_full("GET", "/api/v1/models/churn/versions/1/bundle")
    assert status == 200 and headers["X-Handoff-Digest"] == f"sha256:{v1['digest']}"
    assert v1["digest"] == hashlib.sha256(bundles[0]).hexdigest()
    assert agent.request("GET", "/api/v1/models/churn/versions/1")[1]["pruned"] is None
    assert agent.cli("fsck").returncode == 0


def test_prune_refuses_a_bad_request_in_the_one_error_shape(pushed):
    agent, _ = pushed
    for body in ({}, {"keep": 0}, {"keep": "2"}, {"keep": True}, {"keep": 2.5}, {"keep": 10**20}):
        err = assert_error(*prune(agent, **body), 400, "bad_request")
        assert err["message"] == "keep must be a whole number of versions, from 1 to 1,000,000."
    assert_error(*prune(agent, keep=2, dry_run="yes"), 400, "bad_request")
    assert_error(*prune(agent, name="nope", keep=2), 404, "not_found")
    analyst = agent.make_token("ana", "analyst")
    status, body = agent.request(
        "POST",
        "/api/v1/models/churn/prune",
        body={"keep": 1},
        token=analyst,
    )
    assert_error(status, body, 403)
    assert agent.request("GET", "/api/v1/models/churn/versions/1/bundle")[0] == 200
    for keep in ("0", "99999999999999999999"):  # the second was sent, and refused as "1"
        cli = handoff_cli(agent.env, "prune", "--keep", keep)
        assert cli.returncode == 2, cli.stderr
        assert cli.stderr.startswith("--keep must be from 1 to 1,000,000, e.g. --keep 5."), cli

    cli = handoff_cli(agent.env, "prune", "../x", "--keep", "1")
    assert cli.returncode == 2 and "'../x' is not a model name." in cli.stderr, cli.stderr


def test_the_notebook_prunes_shows_a_pruned_version_and_why_it_cannot_go(pushed):
    """In a real kernel: ``%mlops prune`` says what it freed, history marks the pruned
    versions, and forwarding one is one line that says how to bring it back."""
    import nbformat
    from nbclient import NotebookClient

    agent, bundles = pushed
    cells = [
        f"import os\nos.environ['JUPYTER_RUNTIME_DIR'] = {str(agent.runtime_dir)!r}\n"
        "%load_ext jupyter_handoff",
        "%mlops prune churn --keep 3 --dry-run",
        "%mlops prune churn --keep 3",
        "%mlops history churn",
        "%mlops forward churn:2 --to webhook",
        "%mlops prune churn --keep 0",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True).execute()

    def printed(i):
        return "".join(o.get("text", "") for o in nb.cells[i].outputs).strip()

    freed = size_text(len(bundles[0]) + len(bundles[1]))
    assert printed(1) == f"churn: would prune versions 1, 2, {freed}.", nb.cells[1].outputs
    assert printed(2) == f"churn: pruned versions 1, 2, {freed}.", nb.cells[2].outputs
    history = nb.cells[3].outputs[0]["data"]["text/plain"].splitlines()
    marked = [line.split()[0] for line in history if "[bundle pruned on 20" in line]
    assert marked == ["2", "1"], history
    for i, says, hint in (
        (4, "churn:2's bundle was pruned on ", "Push the same model again"),
        (5, "--keep must be from 1 to 1,000,000.", "e.g. --keep 5"),
    ):
        outputs = nb.cells[i].outputs
        assert [o.get("name") for o in outputs] == ["stderr"] * len(outputs), outputs
        first, *rest = printed(i).splitlines()
        assert first.startswith("UsageError: ") and says in first, printed(i)
        assert len(rest) == 1 and rest[0].startswith(hint), printed(i)


def test_keep_versions_prunes_after_each_verdict(agent_factory, tmp_path):
    """``c.HandoffAgent.keep_versions``: a retraining loop's old bundles go by themselves,
    audited as the retention's; a bad value stops the agent at start with one line."""
    agent = agent_factory(
        NO_CHECKS, "--HandoffAgent.forward_to=[]", "--HandoffAgent.keep_versions=2"
    )
    for i in range(1, 5):
        assert agent.push_bytes("churn", bundle_bytes("churn", model=bytes([i]) * 4096))[0] == 201

    def pruned():
        return [v["number"] for v in versions(agent) if v["pruned"]]

    assert until(lambda: pruned() == [2, 1], timeout=60, what="versions 1 and 2 pruned")
    audit = agent.sql("select actor from audit where action = 'version.prune'")
    assert [r["actor"] for r in audit] == ["retention", "retention"]

    bad = handoff_cli(
        {**agent.env, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt-bad")},
        "serve",
        "--home",
        str(tmp_path / "bad"),
        "--HandoffAgent.keep_versions=-1",
    )
    assert bad.returncode != 0
    assert "c.HandoffAgent.keep_versions must be 0 (keep every bundle) or more" in (
        bad.stdout + bad.stderr
    )


def versions(agent, name: str = "churn") -> list[dict]:
    status, body = agent.request("GET", f"/api/v1/models/{name}/versions")
    assert status == 200, body
    return body["versions"]


def test_central_and_the_local_agent_prune_only_what_central_archived(tmp_path):
    """At central (``--agent central``) only what can no longer move on goes: an archived
    version; one in validated keeps its bundle. The local agent mirrors central's stages and
    keeps the same ones, once its deliveries are done."""
    from test_pipeline_central import start_pair
    from test_pipeline_delivery import FAST, count, push_many

    local, central = start_pair(tmp_path, revalidate=False, local_args=FAST)
    try:
        push_many(local, 3)
        until(lambda: count(central, "many") == 3, timeout=60, what="three at central")
        body = {"to": "archived", "comment": "replaced"}
        status, out = central.request("POST", "/api/v1/models/many/versions/1/transition", body)
        assert status == 200, out

        cli = handoff_cli(central.env, "prune", "many", "--keep", "1", "--agent", "central")
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert cli.stdout.startswith("many: pruned version 1, "), cli.stdout
        status, err = central.request("GET", "/api/v1/models/many/versions/1/bundle")
        assert_error(status, err, 410, "pruned")
        assert central.cli("fsck").returncode == 0

        until(lambda: not pending(local), timeout=60, what="every delivery done")

        def archived():
            return [v["number"] for v in versions(local, "many") if v["stage"] == "archived"]

        until(lambda: archived() == [1], timeout=60, what="the archive mirrored")
        status, out = prune(local, name="many", keep=1)
        assert status == 200 and out["pruned"] == [1], out
        assert local.cli("fsck").returncode == 0
    finally:
        local.stop()
        central.stop()


def pending(agent) -> list[dict]:
    rows = agent.request("GET", "/api/v1/outbox")[1]["outbox"]
    return [r for r in rows if r["state"] == "pending"]
