"""How a command reports what went wrong: on stderr, so a script reading its answer (``--json
| jq``, ``--format csv > file``) gets only answers, and the exit status says which it was."""

from __future__ import annotations

import sys


def complain(*lines: object) -> None:
    """A usage mistake, a refusal or an unreachable agent, one line each, on stderr."""
    print(*lines, sep="\n", file=sys.stderr)
