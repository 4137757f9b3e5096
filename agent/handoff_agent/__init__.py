"""Handoff agent: versions, checks and forwards models pushed from notebooks."""

from ._version import __version__

__all__ = ["__version__"]
