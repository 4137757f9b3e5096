"""Central's signing key: an ed25519 pair made at first start, so a dossier can be checked
by anyone, offline, with the public key alone.

The private key lives in central's home as a 0600 PEM file, or in the file
``c.HandoffAgent.signing_key_file`` names (replicas given one file sign alike); it is never
logged and never in the environment. The public key is published at ``GET /api/v1/keys``,
beside the retired ones, so a dossier signed before a rotation still verifies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
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


def load_file(path: str | Path) -> Ed25519PrivateKey:
    """The key an operator gave (``signing_key_file``): read, never made or repaired here,
    since it is theirs. A problem is one ``ValueError`` line naming the file, never its bytes."""
    path = Path(path)
    where = f"c.HandoffAgent.signing_key_file {path}"
    try:
        mode = path.stat().st_mode
        data = path.read_bytes() if path.is_file() else None
    except OSError as e:
        raise ValueError(f"{where}: cannot be read ({e.strerror or type(e).__name__}).") from None
    if data is None:
        raise ValueError(f"{where}: not a file; give an ed25519 private key PEM.")
    if mode & 0o077:
        raise ValueError(
            f"{where}: others may read it (mode {mode & 0o777:04o}); `chmod 600` it, or 400."
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # not PEM, encrypted, or unknown
        raise ValueError(
            f"{where}: not an unencrypted PEM private key; make one with "
            "`openssl genpkey -algorithm ed25519`."
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(
            f"{where}: holds another kind of key, not an ed25519 one; make one with "
            "`openssl genpkey -algorithm ed25519`."
        )
    return key


def replace_in_home(home: Path) -> tuple[Ed25519PrivateKey, Path]:
    """A new key written beside the home's (0600, fsynced) but not yet in its place: the
    caller records the rotation, then ``commit_new`` moves it in."""
    path = Path(home) / (KEY_FILE + ".new")
    path.unlink(missing_ok=True)  # a rotation that stopped before its commit
    key = Ed25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        f.flush()
        os.fsync(f.fileno())
    return key, path


def commit_new(new: Path) -> None:
    """Move the new key over the old one, atomically, and make the rename durable."""
    os.replace(new, new.parent / KEY_FILE)
    fd = os.open(new.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 32 hex digits of its sha256."""
    return hashlib.sha256(raw(public)).hexdigest()[:32]


def describe(public: Ed25519PublicKey, retired: str | None = None) -> dict:
    """What ``GET /api/v1/keys`` lists for one key; a retired one says since when."""
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return {
        "algorithm": ALGORITHM,
        "key_id": key_id(public),
        "public_key": base64.b64encode(raw(public)).decode(),
        "pem": pem,
        "use": "dossier signatures",
        **({"retired": retired} if retired else {}),
    }


def public_b64(public: Ed25519PublicKey) -> str:
    return base64.b64encode(raw(public)).decode()


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
    """The first key ``parse_public_all`` reads (central's current one)."""
    return parse_public_all(text)[0]


PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", re.S)


def parse_public_all(text: str) -> list[Ed25519PublicKey]:
    """Public keys given as PEM blocks (one or several, as ``dossier key`` writes them), as
    the JSON of ``GET /api/v1/keys`` (every key it lists, retired ones too), or as the base64
    of one key's 32 raw bytes."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        out = []
        for block in PEM_BLOCK.findall(text) or [text]:
            try:
                key = serialization.load_pem_public_key(block.encode())
            except ValueError:
                raise BadKey("the PEM block is not a public key") from None
            if not isinstance(key, Ed25519PublicKey):
                raise BadKey("the PEM key is not an ed25519 key")
            out.append(key)
        return out
    if text.startswith("{"):
        try:
            doc = json.loads(text)
            entries = doc.get("keys", [doc])
            out = [from_raw_b64(entry["public_key"]) for entry in entries]
        except (ValueError, KeyError, TypeError):
            raise BadKey("the JSON holds no keys[0].public_key") from None
        if not out:
            raise BadKey("the JSON holds no keys[0].public_key")
        return out
    return [from_raw_b64(text)]
