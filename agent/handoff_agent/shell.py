"""What a command prints that it does not control: what went wrong goes to stderr, so a script
reading its answer (``--json | jq``, ``--format csv > file``) gets only answers; text someone
else wrote is shown inert, so it cannot forge the output a reviewer reads."""

from __future__ import annotations

import re
import sys

# C0 and C1 controls (ESC, CR, newline, the 8-bit CSI ...), line and paragraph separators, and
# the bidi overrides and isolates that reorder what a terminal shows.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def visible(text: object) -> str:
    """``text`` as one inert line for a terminal: its control characters shown as escapes
    (``\\x1b``, ``\\r``, ``\\n``), so a name, message or comment someone else wrote cannot
    recolour the screen, move the cursor, or forge a line of the output."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode(), str(text))


def complain(*lines: object) -> None:
    """A usage mistake, a refusal or an unreachable agent, one line each, on stderr."""
    print(*lines, sep="\n", file=sys.stderr)


def os_user() -> str:
    """Who runs the command, for its audit rows."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # containers without a passwd entry
        return "cli"


def save_dossier(path, data: bytes) -> None:
    """Write a fetched dossier to ``path``. A file already there is replaced only when it is
    a dossier itself (a zip holding ``dossier.json``, as fetching one again leaves it): a
    mistyped ``--out`` never overwrites someone's file (``--out /etc/passwd`` did).
    ValueError: what is wrong, and on its next line what to do."""
    import zipfile
    from pathlib import Path

    path = Path(path)
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as z:
                ours = "dossier.json" in z.namelist()
        except (OSError, zipfile.BadZipFile):
            ours = False
        if not ours:
            raise ValueError(
                f"{path} exists and is not a dossier; nothing was written.\n"
                "Give --out a new file name (a dossier there is replaced)."
            )
    path.write_bytes(data)
