"""Show an object as a live widget where a frontend can render one, as HTML elsewhere.

The widget's bundle carries the static HTML too, so a notebook saved and opened where no
widget manager runs (nbconvert, GitHub, a terminal) still shows something sensible.
"""

from __future__ import annotations


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

    bundle = {"text/plain": repr(obj), "text/html": obj._repr_html_()}
    if in_kernel():
        try:
            widget = make_widget()
        except ImportError:  # ipywidgets missing: the HTML is all we can do
            widget = None
        if widget is not None:
            bundle.update(widget._repr_mimebundle_())
            bundle["text/plain"] = repr(obj)
    display(bundle, raw=True)
