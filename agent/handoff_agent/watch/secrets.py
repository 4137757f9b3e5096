"""A SQL source's URL holds a password. The store keeps it only encrypted, with a key made at
first use in the agent's home (0600), so a shared metadata database never holds it in clear;
everything shown or logged is the redacted form."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet

KEY_FILE = "source-key"


def _key(home: Path) -> bytes:
    path = Path(home) / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return key


def seal(home: Path, url: str) -> str:
    return Fernet(_key(home)).encrypt(url.encode()).decode()


def unseal(home: Path, token: str) -> str:
    return Fernet(_key(home)).decrypt(token.encode()).decode()
