"""What the agent wires together, built in process (no HTTP): plugins get their context
objects, and the vocabulary follows the policy it loaded."""

from __future__ import annotations

import asyncio
import json

from handoff_agent.plugins import (
    Delivery,
    DestinationContext,
    PluginRegistry,
    Result,
    StageSource,
    registered,
)


class ProbeDestination:
    """A third party's destination: its body reports what its context gave it."""

    name = "probe"

    def __init__(self, parent=None, **kwargs):
        self.parent = parent

    async def body(self, ctx, delivery, **kwargs):
        with await ctx.verified_blob(delivery.digest) as bundle:  # a verified file, no path
            data = bundle.read()
        return json.dumps(
            {
                "context": type(ctx).__name__,
                "agent_id": ctx.agent_id,
                "bundle": data.decode(),
                "fields": sorted(vars(ctx)),
            }
        ).encode()

    def deliver(self, delivery, **kwargs):
        return Result(True)


def test_a_registered_destination_gets_a_context_not_the_agent(agent_in_process):
    # Given a destination registered through the API, and configured by name
    reg = PluginRegistry().add_builtins()
    with registered(reg, "destination", "probe", ProbeDestination):
        agent = agent_in_process(plugin_registry=reg, forward_to=["probe"])
    dest = agent.destinations["probe"]
    assert dest.name == "probe" and not isinstance(dest, StageSource)
    # When the forwarder asks it for a body
    digest = agent.store.put_bytes(b"the bundle")
    delivery = Delivery("d1", "probe", "m", 1, digest)
    ctx = agent.forwarding.context(delivery)
    body = json.loads(asyncio.run(dest.body(ctx, delivery)))
    # Then it saw a DestinationContext with a verified blob, and nothing of the agent's
    assert isinstance(ctx, DestinationContext) and body["context"] == "DestinationContext"
    assert body["agent_id"] == agent.agent_id and body["bundle"] == "the bundle"
    assert "registry" not in body["fields"] and "store" not in body["fields"]


def test_an_unknown_destination_is_skipped_with_the_registered_names(agent_in_process, caplog):
    agent = agent_in_process(forward_to=["nowhere", "webhook"])
    assert list(agent.destinations) == ["webhook"]
    assert "no destination named 'nowhere'; registered: ['central', 'mlflow', 'webhook']" in (
        caplog.text
    )


def test_meta_of_an_in_process_central_follows_its_policy(agent_in_process, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[intake]\nsecrets = ["inproc-secret-Xq3Lm8Vt2Rz6Kp1Wd9"]\n[stages.canary]\nreviewer = 3\n'
    )
    agent = agent_in_process(role="central", policy_file=str(policy))
    flow = {s["name"]: s for s in agent.meta()["stages"]["flow"]}
    assert flow["canary"]["signoffs"] == {"reviewer": 3}
    assert agent.meta()["stages"]["policy"] == "central"
