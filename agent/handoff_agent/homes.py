"""Where the embedded central keeps its home, and its intake secret (created on first use);
the lock that keeps a home to one agent.

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


def directory(home: Path) -> Path:
    """``home``, refused (ValueError) when it is a file: an agent's home is a directory."""
    if home.exists() and not home.is_dir():
        raise ValueError(f"--home {home} is a file, not a directory.")
    return home


def hold(home: Path) -> int:
    """Hold ``home`` for this process, until it ends: one agent serves a home. A second one
    would take over the first's checks and claims, which bear the home's agent id."""
    import fcntl

    directory(home).mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(home / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ValueError(
            f"Another agent (pid {pid}) serves {home}. Stop it first (`jupyter handoff "
            "stop`), or give this one another --home."
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def holder(home: Path) -> str | None:
    """The pid of the agent serving ``home`` now (it holds the lock ``hold`` takes), else None."""
    import fcntl

    path = home / "agent.lock"
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
