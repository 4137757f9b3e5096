"""Notebook-side settings, as traitlets: ``c.Handoff.*`` in an IPython config file."""

from __future__ import annotations

from traitlets import Bool, Enum, Float, Integer, Unicode
from traitlets.config import Configurable


class Handoff(Configurable):
    agent_url = Unicode(
        "", help="URL of the agent. Empty: use the running agent's runtime file."
    ).tag(config=True)
    token = Unicode("", help="Agent token. Empty: read it from the runtime file.").tag(config=True)
    auto_start = Bool(True, help="Start an agent on first push when none is running.").tag(
        config=True
    )
    max_rows = Integer(
        10_000, help="Most evaluation rows stored in a bundle; larger data is sampled."
    ).tag(config=True)
    reference_rows = Integer(5_000, help="Most reference rows stored in a bundle.").tag(config=True)
    format = Enum(["pickle", "skops"], "pickle", help="Default model serialization.").tag(
        config=True
    )
    timeout = Float(600.0, help="Seconds to wait for the agent to answer a push.").tag(config=True)
    spool = Bool(
        True,
        help="Hand a bundle to an agent on this machine by writing it into the agent's spool "
        "(no copy over HTTP); False always streams it over HTTP.",
    ).tag(config=True)


_instance: Handoff | None = None


def settings() -> Handoff:
    """The settings, from the running IPython's config when there is one."""
    global _instance
    if _instance is None:
        try:
            from IPython import get_ipython

            ip = get_ipython()
        except ImportError:  # pragma: no cover
            ip = None
        _instance = Handoff(config=ip.config) if ip is not None else Handoff()
    return _instance
