"""``%mlops dossier NAME:N``: save the signed dossier central made for a version.

The local agent fetches it from the central its version was delivered to, so the notebook
needs no central token. The file is written where the notebook runs, and shown as a summary.
"""

from __future__ import annotations

import html
import json
import zipfile
from pathlib import Path

from handoff_agent.shell import save_dossier

from .errors import HandoffUsageError


class Dossier:
    """A saved dossier: where it is, what it covers, and how to check it."""

    def __init__(self, path: Path, size: int, doc: dict):
        self.path, self.size, self.doc = path, size, doc

    @property
    def subject(self) -> str:
        return str(self.doc.get("subject"))

    def verify_command(self) -> str:
        return f"jupyter handoff dossier verify {self.path} --key central.pub"

    def __repr__(self) -> str:
        return f"Dossier({self.subject!r}, path={str(self.path)!r}, {self.size} bytes)"

    def _repr_html_(self) -> str:
        d = self.doc
        # null when central did not judge the version itself (its intake does not revalidate)
        gate = (d.get("gate") or {}).get("verdict") or "none at central"
        signoffs = (
            ", ".join(f"{s['user']} ({s['role']})" for s in d.get("signoffs") or []) or "none yet"
        )
        stage = ((d.get("stages") or [{}])[-1] or {}).get("stage")
        e = html.escape
        return (
            f"<p><b>Dossier of {e(self.subject)}</b> at central, saved to <code>{e(str(self.path))}"
            f"</code> ({self.size:,} bytes).</p><ul><li>stage {e(str(stage))}, gate verdict "
            f"{e(str(gate))}, sign-offs: {e(signoffs)}</li><li>signed by central's ed25519 key "
            f"<code>{e(str((d.get('signer') or {}).get('key_id')))}</code>; check it offline with"
            f" <code>{e(self.verify_command())}</code></li></ul>"
        )


def dossier(name: str, number: int | None = None, out: str | None = None) -> Dossier:
    """Save the signed dossier of ``name:number`` (a version handed to central)."""
    from .client import connect
    from .refs import checked_name as _checked_name
    from .refs import parse_ref
    from .refs import version_number as _version_number

    if isinstance(name, str) and ":" in name and number is None:
        name, number = parse_ref(name)
    if number is None:
        raise HandoffUsageError(
            "Say which version's dossier to make.", "Write NAME:N, e.g. %mlops dossier churn:3."
        )
    number = _version_number(number, "e.g. %mlops dossier churn:3.")
    _checked_name(name)
    data = connect(start=False).get_raw(f"/api/v1/models/{name}/versions/{number}/dossier")
    path = Path(out or f"dossier-{name}-{number}.zip")
    try:
        save_dossier(path, data)
    except ValueError as e:
        raise HandoffUsageError(*str(e).split("\n", 1)) from None
    except OSError as e:
        raise HandoffUsageError(
            f"Cannot write the dossier to {str(path)!r} ({e.strerror}).",
            "Pass --out with a path in a folder you can write to.",
        ) from None
    with zipfile.ZipFile(path) as z:
        doc = json.loads(z.read("dossier.json"))
    return Dossier(path, len(data), doc)
