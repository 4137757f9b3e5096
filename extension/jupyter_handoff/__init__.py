"""Handoff for notebooks: ``%load_ext jupyter_handoff`` then ``%mlops push``.

Importing this package is cheap: the API, the client and the bundle writer load on first use.
"""

from handoff_agent._version import __version__

__all__ = [
    "__version__",
    "compare",
    "deployments",
    "dossier",
    "forward",
    "get",
    "history",
    "lineage",
    "load_ipython_extension",
    "predict",
    "prune",
    "push",
    "report",
    "versions",
]


def load_ipython_extension(ipython):
    from .errors import install
    from .magics import MlopsMagics

    install(ipython)  # our UsageErrors print as one line, like IPython's own

    ipython.register_magics(MlopsMagics)
    from .completer import register

    register(ipython)


def _jupyter_server_extension_points():
    return [{"module": "jupyter_handoff"}]


def _load_jupyter_server_extension(serverapp):
    from .serverext import load  # jupyter_server is heavy: only the server pays for it

    load(serverapp)


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "jupyter-handoff"}]


def __getattr__(name):
    if name in (
        "push",
        "versions",
        "get",
        "Version",
        "compare",
        "history",
        "report",
        "Report",
        "forward",
        "lineage",
        "Lineage",
        "deployments",
        "predict",
        "prune",
    ):
        from . import api

        return getattr(api, name)
    if name == "dossier":
        from .dossier_save import dossier

        return dossier
    raise AttributeError(f"module 'jupyter_handoff' has no attribute {name!r}")
