"""Where the embedded central keeps its home, and its intake secret (created on first use).

Core code (the central role, the sandbox's hidden paths, the CLI) and the ``central``
destination both need these; neither owns the other.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir


def central_home() -> Path:
    return Path(jupyter_data_dir()) / "handoff-central"


def embedded_secret(home: Path | None = None) -> str:
    """The shared secret of the embedded central, created on first use (mode 0600)."""
    path = (home or central_home()) / "intake.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()
