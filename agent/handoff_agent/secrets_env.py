"""Take a secret out of the environment for good.

``os.environ.pop`` is not enough: ``/proc/<pid>/environ`` shows the environment the process was
started with, which stays in its memory. So the value is read, removed from ``os.environ`` (and
libc's ``environ``), then its bytes in that initial block are overwritten.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

# The agent's secrets that may come from its environment: each leaves it once the agent has
# started, even when configuration gave the value instead (children inherit os.environ).
AGENT_SECRETS = ("HANDOFF_TOKEN", "HANDOFF_DATABASE_URL")


def drop_secrets(names=AGENT_SECRETS) -> None:
    """Take ``names`` out of the environment for good, whether or not their value is used."""
    for name in names:
        secret_from_environ(name)


def secret_from_environ(name: str) -> str | None:
    value = os.environ.pop(name, None)
    if value is not None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            _wipe_initial_environ(name)
    return value


def _wipe_initial_environ(name: str) -> None:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51)
    if not 0 < start < end:
        return
    block = ctypes.string_at(start, end - start)
    key = name.encode() + b"="
    offset = 0
    for entry in block.split(b"\0"):
        if entry.startswith(key):
            # Nothing points here any more (unsetenv dropped the pointer); blank it in place.
            ctypes.memset(start + offset, ord("X"), len(entry))
        offset += len(entry) + 1
