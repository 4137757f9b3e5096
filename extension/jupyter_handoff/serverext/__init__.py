"""The jupyter_server extension: ``/handoff/api/...`` for the JupyterLab side panel.

Imported only by the Jupyter server (never by ``%load_ext``), since jupyter_server is heavy.
"""

from __future__ import annotations

from .agents import AgentLocator
from .config import HandoffServer
from .handlers import handlers

__all__ = ["HandoffServer", "load"]


def load(serverapp) -> None:
    config = HandoffServer(parent=serverapp)
    web_app = serverapp.web_app
    web_app.settings["handoff_locator"] = AgentLocator(config)
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))
    serverapp.log.info("Handoff server extension loaded: /handoff/api")
