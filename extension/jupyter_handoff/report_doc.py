"""A version's report as the notebook shows it: inline, in a sandboxed iframe (no script)."""

from __future__ import annotations

import html


class Report:
    """A version's report. Shown inline in a sandboxed iframe: no script runs."""

    def __init__(self, name: str, number: int, kind: str, content: bytes):
        self.name, self.number, self.kind, self.content = name, number, kind, content

    @property
    def text(self) -> str:
        return self.content.decode()

    def __repr__(self) -> str:
        head = f"Report({self.name!r}, {self.number}, kind={self.kind!r})"
        return head if self.kind == "html" else f"{head}\n{self.text}"  # text reads as text

    def _repr_html_(self) -> str:
        if self.kind == "html":
            doc = html.escape(self.text, quote=True)
            return (
                f'<iframe sandbox="" srcdoc="{doc}" title="Handoff report {html.escape(self.name)}'
                f':{self.number}" style="width:100%;height:640px;border:1px solid #d0d7de">'
                "</iframe>"
            )
        return f"<pre>{html.escape(self.text)}</pre>"

    def _repr_markdown_(self) -> str | None:
        return self.text if self.kind == "md" else None
