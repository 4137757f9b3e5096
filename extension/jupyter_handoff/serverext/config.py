"""Server-extension settings, as traitlets: ``c.HandoffServer.*`` in jupyter_server_config."""

from __future__ import annotations

from traitlets import Bool, Float, Unicode
from traitlets.config import Configurable


class HandoffServer(Configurable):
    """How the Jupyter server reaches the Handoff agents for the side panel."""

    agent_url = Unicode(
        "",
        help="URL of the local agent. Empty: the running agent's runtime file, "
        "starting an agent on demand.",
    ).tag(config=True)
    agent_token = Unicode(
        "", help="Token of the agent at agent_url. Empty: read it from the runtime file."
    ).tag(config=True)
    auto_start = Bool(
        True, help="Start a local agent when the panel needs one and none is running."
    ).tag(config=True)
    central_url = Unicode(
        "", help="URL of the central agent, for reviewers' sign-offs. Empty: no central."
    ).tag(config=True)
    central_token = Unicode(
        "",
        help="Your token on the central agent (`jupyter handoff token create` there). "
        "It decides your roles: analyst, reviewer or admin.",
    ).tag(config=True)
    timeout = Float(60.0, help="Seconds to wait for an agent to answer a proxied request.").tag(
        config=True
    )
