"""Central's signing key: an ed25519 pair made at first start, so a dossier can be checked
by anyone, offline, with the public key alone.

The private key lives in central's home as a 0600 PEM file; it is never logged and never in
the environment. The public key is published at ``GET /api/v1/keys``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_FILE = "signing-key.pem"
ALGORITHM = "ed25519"


class BadKey(ValueError):
    """A public key that cannot be read; the message says which forms are accepted."""


def load_or_create(home: Path) -> Ed25519PrivateKey:
    """The central's private key, made (O_EXCL, mode 0600, fsynced) when there is none."""
    path = Path(home) / KEY_FILE
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an ed25519 private key.")
    return key


def raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 32 hex digits of its sha256."""
    return hashlib.sha256(raw(public)).hexdigest()[:32]


def describe(public: Ed25519PublicKey) -> dict:
    """What ``GET /api/v1/keys`` lists for one key."""
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return {
        "algorithm": ALGORITHM,
        "key_id": key_id(public),
        "public_key": base64.b64encode(raw(public)).decode(),
        "pem": pem,
        "use": "dossier signatures",
    }


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data)).decode()


def verify(public: Ed25519PublicKey, signature_b64: str, data: bytes) -> bool:
    try:
        public.verify(base64.b64decode(signature_b64, validate=True), data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def from_raw_b64(text: str) -> Ed25519PublicKey:
    try:
        data = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(data)
    except ValueError:
        raise BadKey("not a base64 ed25519 public key (32 bytes)") from None


def parse_public(text: str) -> Ed25519PublicKey:
    """A public key given as PEM, as the JSON of ``GET /api/v1/keys`` (first key), or as
    the base64 of its 32 raw bytes."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError:
            raise BadKey("the PEM block is not a public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise BadKey("the PEM key is not an ed25519 key")
        return key
    if text.startswith("{"):
        try:
            doc = json.loads(text)
            entry = doc["keys"][0] if "keys" in doc else doc
            return from_raw_b64(entry["public_key"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise BadKey("the JSON holds no keys[0].public_key") from None
    return from_raw_b64(text)
