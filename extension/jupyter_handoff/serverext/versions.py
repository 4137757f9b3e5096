"""The Python package's version and the installed labextension's, which the panel compares."""

from __future__ import annotations

import json
from pathlib import Path

from handoff_agent._version import __version__

LABEXTENSION = "jupyter-handoff"
FIX = (
    "Reinstall so both come from one release: `pip install --force-reinstall jupyter-handoff` "
    "(or `pip install -e .` in a clone), then restart JupyterLab and reload the page."
)


def labextension_version() -> tuple[str | None, str | None]:
    """The version of the labextension JupyterLab will load, and where it was found."""
    from jupyter_core.paths import jupyter_path

    candidates = [Path(d) / LABEXTENSION for d in jupyter_path("labextensions")]
    candidates.append(Path(__file__).parents[1] / "labextension")  # a development build
    for folder in candidates:
        try:
            return json.loads((folder / "package.json").read_text())["version"], str(folder)
        except (OSError, ValueError, KeyError):
            continue
    return None, None


def versions() -> dict:
    lab, where = labextension_version()
    return {
        "python_version": __version__,
        "labextension_version": lab,
        "labextension_path": where,
        "match": lab == __version__,
        "fix": FIX,
    }
