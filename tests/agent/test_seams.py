"""The agent is a composition root, not a hub: services get only what they use, typed as
small Protocols, and decide what the store only finds. No HTTP here."""

from __future__ import annotations

import ast
import asyncio
import inspect
from pathlib import Path

import handoff_agent
from handoff_agent.agent import HandoffAgent
from handoff_agent.check_flow import CheckFlow
from handoff_agent.forwarding.loop import Forwarder
from handoff_agent.forwarding.service import ForwardService
from handoff_agent.intake import IntakeManager
from handoff_agent.replica_events import ReplicaEvents
from handoff_agent.runner import CheckRunner
from handoff_agent.trust_flow import TrustFlow
from handoff_agent.versions import VersionService

PACKAGE = Path(handoff_agent.__file__).parent
SERVICES = [
    CheckFlow,
    TrustFlow,
    ForwardService,
    Forwarder,
    IntakeManager,
    CheckRunner,
    ReplicaEvents,
]


def test_the_agent_inherits_no_mixin():
    assert [c.__name__ for c in HandoffAgent.__mro__[1:3]] == [
        "LoggingConfigurable",
        "Configurable",
    ]


def test_every_service_is_given_typed_parts_never_the_agent():
    for cls in SERVICES:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        names = [p.name for p in params]
        assert "agent" not in names and "parent" not in names, cls.__name__
        untyped = [p.name for p in params if p.annotation is inspect.Parameter.empty]
        assert not untyped, f"{cls.__name__}: untyped {untyped}"


def test_no_module_but_the_root_and_the_handlers_reaches_into_the_agent():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "handlers" or rel.name == "agent.py" or rel.name.endswith("_cli.py"):
            continue  # handlers hold the app's agent (the services' front door); a CLI app's
            # ``agent`` trait names which agent it calls over HTTP
        for node in ast.walk(ast.parse(path.read_text())):
            is_attr = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            if is_attr and node.value.id == "self" and node.attr in ("agent", "parent"):
                problems.append(f"{rel}:{node.lineno}: self.{node.attr}")
    assert not problems, "\n".join(problems)


class RankingStore:
    """A store that only finds versions, as MetadataStore.best_version does."""

    def __init__(self, in_stage=None, best=None):
        self.in_stage, self.best, self.asked = in_stage, best, []

    def best_version(self, name, before=2**62, *, stage=None, statuses=()):
        self.asked.append((stage, tuple(statuses)))
        return self.in_stage if stage else self.best


def test_the_champion_rule_is_the_services_decision():
    # production wins whatever the scores say
    store = RankingStore(in_stage={"number": 3}, best={"number": 2})
    assert VersionService(store).champion("m") == {"number": 3}
    assert store.asked == [("production", ())]
    # else the best-scored version that passed (with or without warnings)
    store = RankingStore(best={"number": 2})
    assert VersionService(store).champion("m") == {"number": 2}
    assert store.asked[-1] == (None, ("passed", "warned"))


class Pools:
    async def call(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)

    async def run_io(self, fn, *args):
        return fn(*args)


class Events:
    def __init__(self):
        self.seen = []

    def publish(self, kind, relayed=False, **data):
        self.seen.append((kind, data))
        return data


def test_a_check_flow_without_a_runner_leaves_the_runs_queued():
    # Given a check flow not started (no runner), whose store would hand out runs
    class Store:
        def claim_checks(self, owner):
            raise AssertionError("claimed runs nobody would run")

    flow = CheckFlow(Store(), None, None, None, ["loads"], Events(), Pools(), "me")
    # When it is asked to schedule, it claims nothing
    asyncio.run(flow.schedule_queued())
