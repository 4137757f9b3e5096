"""Show an object as a live widget where a frontend can render one, as HTML elsewhere.

The widget's bundle carries the static HTML too, so a notebook saved and opened where no
widget manager runs (nbconvert, GitHub, a terminal) still shows something sensible. A widget
that settles later (a push's checks) rewrites that output once it is done, so the saved
notebook says how it ended, not "checking"; ``Version.wait`` rewrites it too, for a kernel
stopped right after the cell that waits.
"""

from __future__ import annotations

import threading


def in_kernel() -> bool:
    """True inside a Jupyter kernel, where widgets have a comm to talk through."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def show(obj, make_widget) -> None:
    from IPython.display import display

    widget = None
    if in_kernel():
        try:
            widget = make_widget()
        except ImportError:  # ipywidgets missing: the HTML is all we can do
            widget = None
    handle = display(_bundle(obj, widget), raw=True, display_id=widget is not None)
    if getattr(widget, "following", False):
        _rewrite_when_done(obj, widget, handle)


def _bundle(obj, widget) -> dict:
    bundle = {"text/plain": repr(obj), "text/html": obj._repr_html_()}
    if widget is not None:
        bundle.update(widget._repr_mimebundle_())
        bundle["text/plain"] = repr(obj)
    return bundle


# outputs still showing a version as checking, by (model, number): ``Version.wait`` rewrites
# them itself, so a headless run (nbconvert --execute) whose kernel stops right after a
# cell that waits saves the verdict even when the widget's own rewrite would come too late
_PENDING: dict[tuple, list] = {}
_PENDING_LOCK = threading.Lock()


def _rewrite(obj, widget, handle, once) -> None:
    if not once.acquire(blocking=False):
        return
    with _PENDING_LOCK:
        key = (obj.name, obj.number)
        _PENDING[key] = [p for p in _PENDING.get(key, []) if p[3] is not once]
    try:
        obj.refresh()
    except Exception:  # the agent went away: the output keeps what it showed
        return
    handle.update(_bundle(obj, widget), raw=True)


def rewrite_settled(name: str, number: int) -> None:
    """Rewrite now the outputs of ``name:number`` still showing it as checking (its
    checks are in: ``Version.wait`` calls this once they are)."""
    with _PENDING_LOCK:
        pending = list(_PENDING.get((name, number), []))
    for obj, widget, handle, once in pending:
        _rewrite(obj, widget, handle, once)


def _rewrite_when_done(obj, widget, handle) -> None:
    once = threading.Lock()
    with _PENDING_LOCK:
        _PENDING.setdefault((obj.name, obj.number), []).append((obj, widget, handle, once))

    def settled(_change=None):
        if not widget.done:
            return
        widget.unobserve(settled, "done")
        _rewrite(obj, widget, handle, once)

    widget.observe(settled, "done")
    settled()  # it may have finished while it was being shown
