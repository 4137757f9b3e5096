"""One plugin API: built-ins, third parties and tests all register through PluginRegistry."""

from __future__ import annotations

import logging
import signal
import textwrap

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from support import RunningAgent, forwarding_args, push_model, until

from handoff_agent import plugins
from handoff_agent.plugins import (
    BUILTINS,
    GROUPS,
    Check,
    Deployer,
    Destination,
    Monitor,
    PluginRegistry,
    UnknownPlugin,
    registered,
)


def test_builtins_register_through_the_same_call_as_anyone():
    # Given an empty registry and the built-ins added through register()
    reg = PluginRegistry().add_builtins()
    # Then every built-in is there under its own name and satisfies its kind's protocol
    for kind, found in BUILTINS.items():
        assert reg.names(kind) == sorted(found)
        for name in found:
            obj = reg.load(kind, name)
            instance = obj() if kind == "check" else obj
            assert instance.name == name
            assert isinstance(instance, plugins.PROTOCOLS[kind])
    assert all(isinstance(reg.load("check", n)(), Check) for n in BUILTINS["check"])
    assert isinstance(reg.load("destination", "central"), plugins.StageSource)


def test_every_kind_has_an_entry_point_group_kept_from_before():
    # The groups plugin authors already use keep their names.
    assert GROUPS["check"] == "handoff_agent.checks"
    assert GROUPS["destination"] == "handoff_agent.forwarders"
    assert set(GROUPS) == set(plugins.PROTOCOLS) == set(BUILTINS)


THIRD_PARTY = """
class EchoDeployer:
    name = "echo"

    async def deploy(self, ctx, **kwargs):
        return {"url": f"echo://{ctx.model}/{ctx.number}"}

    async def undeploy(self, ctx, **kwargs):
        return None


class CountMonitor:
    name = "count"

    async def observe(self, ctx, rows, **kwargs):
        return {"rows": len(rows)}


class NullDestination:
    name = "null"

    async def body(self, ctx, delivery, **kwargs):
        return b"{}"

    def deliver(self, delivery, **kwargs):
        return None
"""


@pytest.fixture
def installed_third_party(tmp_path, monkeypatch):
    """A package installed the way pip leaves one: a module and a dist-info with entry points."""
    (tmp_path / "handoff_third_party.py").write_text(THIRD_PARTY)
    info = tmp_path / "handoff_third_party-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: handoff-third-party\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [handoff_agent.deployers]
            echo = handoff_third_party:EchoDeployer

            [handoff_agent.monitors]
            count = handoff_third_party:CountMonitor

            [handoff_agent.forwarders]
            null = handoff_third_party:NullDestination
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    import sys

    sys.modules.pop("handoff_third_party", None)


def test_a_third_party_deployer_monitor_and_destination_register_from_entry_points(
    installed_third_party,
):
    # Given a package installed with entry points in three groups
    reg = PluginRegistry().add_builtins().add_entry_points()
    # Then the one discoverer finds each under its kind, next to the built-ins
    assert "echo" in reg.names("deployer") and "count" in reg.names("monitor")
    assert {"central", "null"} <= set(reg.names("destination"))
    # And each satisfies its protocol
    assert isinstance(reg.load("deployer", "echo")(), Deployer)
    assert isinstance(reg.load("monitor", "count")(), Monitor)
    assert isinstance(reg.load("destination", "null")(), Destination)


def test_without_entry_points_only_builtins_and_what_is_registered(installed_third_party):
    # Given the registry the test suite's agents use (entry points off)
    reg = plugins.default_registry(
        False, {"deployer": {"mine": "handoff_third_party:EchoDeployer"}}
    )
    # Then the installed package is not seen, and the explicit registration is
    assert "echo" not in reg.names("deployer") and "null" not in reg.names("destination")
    assert reg.names("deployer") == ["mine"]


def test_a_broken_plugin_is_a_warning_and_an_unknown_name_lists_the_registered(caplog):
    reg = PluginRegistry().add_builtins()
    reg.register("destination", "broken", "no_such_module_here:Thing")
    with caplog.at_level(logging.WARNING, logger="handoff_agent"):
        found = reg.load_all("destination", ["central", "broken", "nope"])
    assert list(found) == ["central"]
    text = caplog.text
    assert "destination plugin 'broken' failed to load" in text
    assert "no destination named 'nope'; registered: ['broken', 'central'" in text
    with pytest.raises(UnknownPlugin, match=r"registered: \['drift', 'explainability'"):
        reg.load("check", "nope")


def test_a_name_registered_twice_keeps_the_first_unless_replaced(caplog):
    reg = PluginRegistry().add_builtins()
    with caplog.at_level(logging.WARNING, logger="handoff_agent"):
        reg.register("check", "loads", "elsewhere:Loads")
    assert reg.specs("check")["loads"] == BUILTINS["check"]["loads"]
    assert "check 'loads' is registered twice" in caplog.text
    with pytest.raises(ValueError, match="unknown plugin kind"):
        reg.register("exporter", "x", "a:b")


def test_registered_adds_a_plugin_for_a_block_only():
    reg = PluginRegistry().add_builtins()

    class Echo:
        name = "echo"

        async def deploy(self, ctx, **kwargs):
            return {}

        async def undeploy(self, ctx, **kwargs):
            return None

    with registered(reg, "deployer", "echo", Echo):
        assert reg.load("deployer", "echo") is Echo
        assert reg.specs("deployer") == {}  # an object, not importable by a worker
    assert reg.names("deployer") == []
    with registered(reg, "check", "loads", "json:loads"):
        assert reg.specs("check")["loads"] == "json:loads"
    assert reg.specs("check")["loads"] == BUILTINS["check"]["loads"]


SECRET = "renamed-secret-9fQ2mXv7Lp4Rt8Kw1Zb6"
POLICY = f"""
[intake]
revalidate = false
[intake.senders]
alice = "{SECRET}"
"""


def test_central_registered_under_another_name_forwards_and_mirrors_stages(tmp_path):
    # Given the central destination registered (as any plugin) under the name "it"
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    central = RunningAgent(
        tmp_path / "central", tmp_path / "rt-c", ["--role", "central", "--policy", str(policy)]
    )
    central.start()
    local = RunningAgent(
        tmp_path / "local",
        tmp_path / "rt-l",
        [
            *forwarding_args(central, SECRET, to="it"),
            "--HandoffAgent.checks=[]",
        ],
        plugins={"destination": {"it": "handoff_agent.forwarding.central:CentralDestination"}},
    )
    local.start()
    try:
        X = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 2)), columns=["a", "b"])
        y = (X["a"] > 0).astype(int)
        v = push_model(local, LogisticRegression().fit(X, y), "renamed")

        # Then the version reaches central and central's stage comes back to the local agent
        def local_version():
            return local.request("GET", f"/api/v1/models/renamed/versions/{v.number}")[1]

        until(lambda: local_version().get("stage") == "validated", timeout=90)
        forwards = local_version()["forwards"]
        assert [(f["destination"], f["state"]) for f in forwards] == [("it", "delivered")]
        remote = central.request("GET", "/api/v1/models/renamed/versions/1")[1]
        assert remote["pushed_by"] == "alice"
    finally:
        local.stop()
        central.stop()


RAISING_DESTINATION = """
class Raising:
    name = "raising"

    def __init__(self, config=None):
        pass

    async def body(self, ctx, delivery, **kwargs):
        return b"{}"

    def deliver(self, delivery, **kwargs):
        raise KeyError("the plugin's own bug")
"""


def test_a_destination_that_raises_is_retried_with_its_error_shown(tmp_path):
    # Given a third party's destination whose deliver raises on every attempt
    (tmp_path / "raising_destination.py").write_text(RAISING_DESTINATION)
    local = RunningAgent(
        tmp_path / "local",
        tmp_path / "rt",
        [
            '--HandoffAgent.forward_to=["it"]',
            "--HandoffAgent.checks=[]",
            "--HandoffAgent.forward_backoff=0.1",
            "--HandoffAgent.forward_backoff_cap=0.2",
        ],
        plugins={"destination": {"it": "raising_destination:Raising"}},
        env={"PYTHONPATH": str(tmp_path)},
    )
    local.start()
    try:
        X = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 2)), columns=["a", "b"])
        v = push_model(local, LogisticRegression().fit(X, X["a"] > 0), "plugged")

        # Then each attempt is counted and the version shows why it has not gone
        def forward():
            got = local.request("GET", f"/api/v1/models/plugged/versions/{v.number}")[1]
            rows = got.get("forwards") or [{}]
            return rows[0] if rows[0].get("attempts", 0) >= 2 else None

        row = until(forward, timeout=60)
        assert row["state"] == "pending"  # waiting for its next try, not dead
        assert "KeyError" in row["last_error"] and "the plugin's own bug" in row["last_error"]
    finally:
        local.stop()


SLOW_DESTINATION = """
import asyncio, pathlib, os


class Slow:
    name = "slow"

    def __init__(self, config=None):
        pass

    async def body(self, ctx, delivery, **kwargs):
        pathlib.Path(os.environ["MARKER"]).touch()  # building the body (a conversion) began
        await asyncio.sleep(600)
        return b"{}"

    def deliver(self, delivery, **kwargs):
        return {}
"""


def test_an_agent_stopped_while_a_delivery_is_built_exits(tmp_path):
    """`jupyter handoff stop` while a hand-off's body is being built (a conversion to skops):
    the agent ends, its row put back for the next start. (It went on retrying a tick that
    failed for good, logging a traceback a second, and held its home.)"""
    (tmp_path / "slow_destination.py").write_text(SLOW_DESTINATION)
    marker = tmp_path / "building"
    local = RunningAgent(
        tmp_path / "local",
        tmp_path / "rt",
        ['--HandoffAgent.forward_to=["it"]', "--HandoffAgent.checks=[]"],
        plugins={"destination": {"it": "slow_destination:Slow"}},
        env={"PYTHONPATH": str(tmp_path), "MARKER": str(marker)},
    )
    local.start()
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 2)), columns=["a", "b"])
    push_model(local, LogisticRegression().fit(X, X["a"] > 0), "plugged")
    until(marker.exists, timeout=60, what="the delivery's body being built")
    local.proc.send_signal(signal.SIGTERM)
    assert local.proc.wait(30) == 0
    local.stop()
    assert "cannot schedule new futures" not in local.read_log()
    rows = local.sql("SELECT state, claimed_by FROM outbox")
    assert [(r["state"], r["claimed_by"]) for r in rows] == [("pending", None)]
