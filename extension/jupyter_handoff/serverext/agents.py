"""Finding the agents the proxy forwards to: configured, running, or started on demand."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from handoff_agent import runtime

from .config import HandoffServer

START_HINT = "Start it with `jupyter handoff serve`, or run `%mlops agent start` in a notebook."


class AgentMissing(Exception):
    """No agent can be reached. ``code``, ``message`` and ``hint`` go to the panel."""

    def __init__(self, status: int, code: str, message: str, hint: str = ""):
        super().__init__(message)
        self.status, self.code, self.message, self.hint = status, code, message, hint


@dataclass
class Target:
    url: str
    token: str
    setting: str = ""  # the c.HandoffServer trait the token came from; "": the runtime file


LOCAL_TOKEN_HOW = "`jupyter handoff status` on the agent's machine shows its token."
CENTRAL_TOKEN_HOW = (
    "Ask central's admin for a token of your own (jupyter handoff token create --user YOU "
    "--role reviewer)."
)


def configured(url: str, token: str, names: tuple[str, str], how: str) -> Target:
    """An agent at a configured URL, with the configured token. Without one, every request
    would be refused for a missing header: the setting to fill in is said instead."""
    url_name, token_name = (f"c.HandoffServer.{n}" for n in names)
    if not token:
        raise AgentMissing(
            401,
            "token_not_configured",
            f"{url_name} is set but {token_name} is empty: set it in "
            "jupyter_server_config.py, then restart JupyterLab.",
            how,
        )
    return Target(url.rstrip("/"), token, token_name)


class AgentLocator:
    """Resolves ``local`` and ``central`` to a URL and token. Thin, no HTTP of its own
    besides the runtime module's health check, so it is easy to test."""

    def __init__(self, config: HandoffServer):
        self.config = config
        self._lock = asyncio.Lock()
        self._found: Target | None = None

    def central(self) -> Target:
        if not self.config.central_url:
            raise AgentMissing(
                404,
                "central_not_configured",
                "No central agent is configured for this Jupyter server.",
                "Set c.HandoffServer.central_url and c.HandoffServer.central_token "
                "in jupyter_server_config.py, then restart JupyterLab.",
            )
        cfg = self.config
        return configured(
            cfg.central_url, cfg.central_token, ("central_url", "central_token"), CENTRAL_TOKEN_HOW
        )

    def running_local(self) -> dict | None:
        info = runtime.read()
        if info and runtime.healthy(info["url"]):
            return info
        return None

    async def local(self, fresh: bool = False) -> Target:
        """The local agent: from c.HandoffServer.agent_url, else the runtime file (never from
        a request: a page must not choose where Jupyter sends the agent's token).
        The agent found is remembered until ``fresh`` asks to look again (it stopped)."""
        if self.config.agent_url:
            cfg = self.config
            return configured(
                cfg.agent_url, cfg.agent_token, ("agent_url", "agent_token"), LOCAL_TOKEN_HOW
            )
        if self._found is not None and not fresh:
            return self._found
        loop = asyncio.get_running_loop()
        async with self._lock:  # two panels asking at once start one agent, not two
            info = await loop.run_in_executor(None, self.running_local)
            if info is None:
                if not self.config.auto_start:
                    raise AgentMissing(
                        503, "agent_not_running", "No Handoff agent is running.", START_HINT
                    )
                try:
                    info = await loop.run_in_executor(None, runtime.start_detached)
                except RuntimeError as e:
                    raise AgentMissing(
                        503,
                        "agent_start_failed",
                        f"Could not start a Handoff agent: {e}",
                        "Run `jupyter handoff serve` in a terminal to see why.",
                    ) from None
        self._found = Target(info["url"].rstrip("/"), self.config.agent_token or info["token"])
        return self._found
