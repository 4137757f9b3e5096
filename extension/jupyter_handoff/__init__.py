"""Handoff for notebooks: ``%load_ext jupyter_handoff`` then ``%mlops push``.

Importing this package is cheap: the API, the client and the bundle writer load on first use.
"""

from handoff_agent._version import __version__

__all__ = ["__version__", "get", "load_ipython_extension", "push", "versions"]


def load_ipython_extension(ipython):
    from .magics import MlopsMagics

    ipython.register_magics(MlopsMagics)


def __getattr__(name):
    if name in ("push", "versions", "get", "Version"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'jupyter_handoff' has no attribute {name!r}")
