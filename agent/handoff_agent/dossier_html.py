"""The dossier's page for people: every value escaped (jinja2 autoescape), no script."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape

_env = Environment(
    loader=PackageLoader("handoff_agent", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(doc: dict) -> str:
    return _env.get_template("dossier.html.j2").render(d=doc)
