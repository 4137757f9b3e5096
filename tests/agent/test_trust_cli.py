"""An admin operates the trust list: a version held in needs_trust goes on once its types are
trusted, and the analyst sees in the notebook what central is waiting for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.svm import SVC
from support import push_model, until
from test_pipeline_central import FIRST_SECRET
from test_trust import start_central, start_local

SVC_TYPE = "sklearn.svm._classes.SVC"  # a fine model, not on the default list
LOADS_ONLY = "--HandoffAgent.checks=['loads', 'smoke']"


@pytest.fixture
def pair(tmp_path):
    central = start_central(tmp_path, LOADS_ONLY, "--HandoffAgent.trust_poll_interval=0.5")
    local = start_local(tmp_path, central, LOADS_ONLY, "--HandoffAgent.owner_name=alice")
    yield local, central
    local.stop()
    central.stop()


def svc_and_data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(80, 3)), columns=list("abc"))
    y = (X["a"] > 0).astype(int)
    return SVC().fit(X, y), X, y


def version(agent, name="svm", number=1) -> dict:
    return agent.request("GET", f"/api/v1/models/{name}/versions/{number}")[1]


def show_in_notebook(local, ref: str) -> tuple[str, str]:
    """What `%mlops show` and `%mlops lineage` render, through the notebook-side API."""
    from jupyter_handoff import api, config

    config._instance = config.Handoff(agent_url=local.url, token=local.token, auto_start=False)
    try:
        name, _, number = ref.partition(":")
        shown = api.get(name, int(number))
        widget = shown.widget(follow=False)
        widget.refresh()
        return widget.handoff, api.lineage(ref)._repr_html_()
    finally:
        config._instance = None


def test_needs_trust_then_trust_add_then_validated(pair):
    local, central = pair
    model, X, y = svc_and_data()
    # Given a push whose model names a type outside the default list
    push_model(local, model, "svm", X=X, y=y)
    until(lambda: version(local).get("stage") == "needs_trust", 120, "needs_trust at local")

    # Then central holds it, names the type, and has loaded nothing
    remote = version(central)
    assert remote["needs_trust"] == [SVC_TYPE] and remote["checks"] == []
    # And the local agent and the notebook say what central waits for
    mirrored = version(local)
    assert mirrored["needs_trust"] == [SVC_TYPE]
    assert mirrored["stages"][-1] == {
        **mirrored["stages"][-1],
        "stage": "needs_trust",
        "comment": f"waiting for an admin to trust: {SVC_TYPE}",
    }
    handoff_line, lineage_html = show_in_notebook(local, "svm:1")
    waiting = f"central is waiting for an admin to trust: {SVC_TYPE}"
    assert waiting in handoff_line and "stage needs_trust" in handoff_line
    assert waiting in lineage_html

    # When an admin trusts it on the command line while central runs
    out = central.cli("trust", "add", SVC_TYPE)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Trusted: {SVC_TYPE}." in out.stdout
    assert "The agent of this home picks this up within seconds" in out.stdout

    # Then central notices, runs its checks, validates, and the local agent follows
    until(lambda: version(local).get("stage") == "validated", 180, "validated at local")
    remote = version(central)
    assert [s["stage"] for s in remote["stages"]] == [
        "received",
        "needs_trust",
        "received",
        "validated",
    ]
    assert remote["stages"][2]["comment"].startswith("trusted by ")
    assert SVC_TYPE in remote["stages"][2]["comment"]
    assert {c["name"]: c["status"] for c in remote["checks"]} == {"loads": "pass", "smoke": "pass"}
    assert remote["needs_trust"] is None
    assert version(local)["needs_trust"] is None

    # And the change is listed and audited; without --home, in the running central's home
    listing = central.cli("trust", "list")
    assert SVC_TYPE in listing.stdout.split("Added:")[1]
    from support import handoff_cli

    here = handoff_cli(central.env, "trust", "list", "--agent-role", "central")
    assert here.stdout == listing.stdout, here.stdout + here.stderr
    added = central.request("GET", "/api/v1/trust")[1]["added"]
    assert [a["type"] for a in added] == [SVC_TYPE]
    rows = central.sql("select actor, action, subject from audit where action = 'trust.add'")
    assert rows == [{"actor": added[0]["trusted_by"], "action": "trust.add", "subject": SVC_TYPE}]
    assert central.cli("audit", "verify").returncode == 0


def test_trust_over_http_releases_at_once_and_remove_is_audited(pair):
    local, central = pair
    model, X, y = svc_and_data()
    carol = central.make_token("carol", "admin")
    bob = central.make_token("bob", "reviewer")
    push_model(local, model, "svm", X=X, y=y)
    until(lambda: version(central).get("stage") == "needs_trust", 120, "needs_trust")

    # A reviewer may read the list but not change it
    status, body = central.request("POST", "/api/v1/trust", {"types": [SVC_TYPE]}, token=bob)
    assert (status, body["error"]["code"]) == (403, "forbidden_role")
    assert central.request("GET", "/api/v1/trust", token=bob)[0] == 200
    # An admin's HTTP action releases the waiting version in the same call
    status, body = central.request("POST", "/api/v1/trust", {"types": [SVC_TYPE]}, token=carol)
    assert status == 201, body
    assert body == {"added": [SVC_TYPE], "released": [{"name": "svm", "version": 1}]}
    until(lambda: version(central).get("stage") == "validated", 120, "validated")
    assert "trusted by carol" in version(central)["stages"][2]["comment"]

    # Removing an added type is audited; a default one cannot be removed
    out = central.cli("trust", "remove", SVC_TYPE)
    assert out.returncode == 0 and f"No longer trusted: {SVC_TYPE}." in out.stdout
    out = central.cli("trust", "remove", "sklearn.pipeline.Pipeline")
    assert out.returncode == 1 and "on the default list" in out.stderr
    out = central.cli("trust", "remove", "not.there")  # a typo is said, not "done"
    assert out.returncode == 1 and "None of not.there was on the trust list" in out.stderr
    assert central.request("GET", "/api/v1/trust")[1]["added"] == []
    rows = central.sql("select action from audit where action like 'trust.%' order by seq")
    actions = [r["action"] for r in rows]
    assert actions == ["trust.add", "trust.remove"]


def test_without_revalidation_a_trusted_version_takes_the_local_verdict(tmp_path):
    import skops.io as sio
    from test_pipeline_delivery import deliver, envelope

    policy = f'[intake]\nsecrets = ["{FIRST_SECRET}"]\nrevalidate = false\n'
    central = start_central(tmp_path, policy=policy)
    try:
        model, _, _ = svc_and_data()
        status, out = deliver(central, envelope("svm", sio.dumps(model)))
        assert (status, out["stage"], out["needs_trust"]) == (201, "needs_trust", [SVC_TYPE])
        status, body = central.request("POST", "/api/v1/trust", {"types": [SVC_TYPE]})
        assert status == 201 and body["released"] == [{"name": "svm", "version": 1}]
        until(lambda: version(central).get("stage") == "validated", 60, "validated")
        stages = version(central)["stages"]
        assert [s["stage"] for s in stages] == ["received", "needs_trust", "received", "validated"]
        assert stages[2]["comment"].endswith("no central checks")
    finally:
        central.stop()


def test_without_home_or_role_the_list_changed_is_said_to_be_the_local_agents(tmp_path):
    """``trust add`` alone writes the local agent's list: it says so, and where central's is."""
    import os

    from support import handoff_cli

    from handoff_agent.store.metadata import MetadataStore

    data = tmp_path / "data"
    env = {**os.environ, "JUPYTER_DATA_DIR": str(data), "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    for home in (data / "handoff", data / "handoff-central"):
        home.mkdir(parents=True)
        MetadataStore.for_home(home).close()

    local = handoff_cli(env, "trust", "add", SVC_TYPE)
    central = handoff_cli(env, "trust", "add", SVC_TYPE, "--agent-role", "central")

    assert local.returncode == 0, local.stderr
    assert local.stdout.splitlines()[1] == (
        "This is the local agent's list, which it picks up within seconds. Central's is "
        "changed with --agent-role central (or its --home)."
    )
    assert central.returncode == 0, central.stderr
    assert central.stdout.splitlines()[1].startswith("Central picks this up within seconds")
    listed = handoff_cli(env, "trust", "list", "--agent-role", "central").stdout
    assert SVC_TYPE in listed.split("Added:")[1]


def test_a_malformed_type_name_is_a_usage_mistake_and_a_gadget_a_refusal(tmp_path):
    """``trust add 'é.x'``: one line saying what a type name looks like, exit 2; a gadget,
    well formed, is refused by the trust rules (exit 1)."""
    import os

    from support import handoff_cli

    from handoff_agent.store.metadata import MetadataStore

    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    (tmp_path / "home").mkdir()
    MetadataStore.for_home(tmp_path / "home").close()
    home = ("--home", str(tmp_path / "home"))

    out = handoff_cli(env, "trust", "add", "é.x", *home)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        "'é.x' is not an exact type name: dotted module and class names in ASCII letters, "
        "digits and _, such as sklearn.tree._tree.Tree; no wildcards."
    ]
    gadget = handoff_cli(env, "trust", "add", "builtins.exec", *home)
    assert gadget.returncode == 1 and "It is never trusted." in gadget.stderr
