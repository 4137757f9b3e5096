"""ipywidgets views. Imported only when something is displayed, never at ``%load_ext``."""

from __future__ import annotations


def __getattr__(name):
    if name == "PushWidget":
        from .push import PushWidget

        return PushWidget
    if name == "CompareWidget":
        from .compare import CompareWidget

        return CompareWidget
    raise AttributeError(f"module 'jupyter_handoff.widgets' has no attribute {name!r}")
