"""Which checks exist. Built-ins come through the entry point group like anyone else's.

The agent only resolves names to ``module:attr`` strings; the worker imports them, so the
agent process never imports a check (nor sklearn).
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

GROUP = "handoff_agent.checks"
log = logging.getLogger(__name__)


def discover() -> dict[str, str]:
    """Every registered check, as name -> ``module:attr``."""
    found = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found:
            log.warning("check %r is registered twice; keeping %s", ep.name, found[ep.name])
            continue
        found[ep.name] = ep.value
    return found
