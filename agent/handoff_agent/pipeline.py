"""What the composition root (agent.py) reads from the home and the plugin registry before it
builds the services: this agent's stable id, central's policy file, the destinations."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

from .homes import central_home, embedded_secret
from .plugins import PluginRegistry

log = logging.getLogger("handoff_agent")


def agent_id(home: Path) -> str:
    """This agent's stable id (``<home>/agent-id``): its outbox and check claims."""
    id_file = home / "agent-id"
    if not id_file.exists():
        id_file.write_text(uuid.uuid4().hex)
    return id_file.read_text().strip()


def destinations(registry: PluginRegistry, names: list[str], config) -> dict:
    """The configured destinations, by name, each built once with the agent's config (never
    with the agent as its parent: what it may use of the agent comes in its context)."""
    found = registry.load_all("destination", list(names))
    out = {}
    for name, cls in found.items():
        dest = out[name] = cls(config=config)
        dest.name = name  # the name it is registered and configured under
    return out


def embedded_policy(home: Path) -> Path:
    """The embedded central writes its policy once, where an operator can read and edit it."""
    path = home / "policy.toml"
    if not path.exists():
        same = home.resolve() == central_home().resolve()
        secret = embedded_secret(home if not same else None)
        path.write_text(
            "# Handoff central policy. Edit, then restart the central agent.\n"
            "[intake]\n"
            f"secrets = [{json.dumps(secret)}]\n"
            "# Types this central trusts beyond Handoff's default list (exact names).\n"
            "# `jupyter handoff trust add TYPE` adds more without a restart.\n"
            "trusted_types = []\n"
            "revalidate = true\n"
            "# true: central's checks apply an analyst's --gate overrides; false: ours only.\n"
            "gate_overrides = false\n"
            '# Checks that must judge every version here: a skip fails it, e.g. ["fairness"]\n'
            "# refuses a version pushed without --sensitive.\n"
            "required_checks = []\n\n"
            "[sandbox]\n"
            "# true: never run model code without bubblewrap (apt-get install bubblewrap).\n"
            "# false here so the embedded central runs on any machine; it then falls back\n"
            "# to rlimits with a warning.\n"
            "require = false\n\n"
            "[stages.approved]\nreviewer = 1\n\n[stages.canary]\nreviewer = 1\n\n"
            "[stages.production]\nreviewer = 1\nadmin = 1\n"
        )
        path.chmod(0o600)
    return path
