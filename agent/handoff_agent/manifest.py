"""The bundle manifest's shape, in one place: its fields, its members, and their checks.

The notebook side builds a manifest with ``build`` and checks it with ``check_fields`` before
it uploads; the agent runs the same ``check_fields`` on what it receives (``bundle.validate``).
Standard library only (``blake3`` is imported when a member is hashed), so ``%mlops push``
pays nothing for importing it.
"""

from __future__ import annotations

import hashlib
import re

# 2: the manifest names its members' digest algorithm (``files_hash``); 1: they are SHA-256.
# An agent older than 2 refuses a bundle of 2 as an unsupported format, not as corrupted.
FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)  # what this agent reads
MANIFEST = "manifest.json"
MODEL_MEMBERS = {"model.pkl": "pickle", "model.skops": "skops"}
SERIALIZATIONS = tuple(MODEL_MEMBERS.values())
ROLES = ("X", "y", "sensitive", "reference_X", "reference_y")  # pushed data, by role
DATA_MEMBERS = {f"data/{role}.parquet": role for role in ROLES}
MEMBERS = {MANIFEST, *MODEL_MEMBERS, *DATA_MEMBERS}
TASKS = (None, "classification", "regression")
INPUT_KINDS = ("table", "array", "text")  # signature.input; absent means "table"
# ``files`` holds each member's digest by the algorithm ``files_hash`` names. BLAKE3 for what
# Handoff writes: two of a push's three passes over its bytes hash the members, and BLAKE3
# runs about 4x SHA-256's speed on a core here, as collision-resistant. A manifest without
# ``files_hash`` (older bundles) means SHA-256. The store still names a bundle by its SHA-256.
MEMBER_HASHES = ("sha256", "blake3")
MEMBER_HASH = "blake3"

STRINGS = ("flavor", "model_class", "message")  # optional, at most 10,000 characters
OBJECTS = ("tags", "params", "provenance", "signature", "gate", "data")  # optional objects


class ManifestError(ValueError):
    """A manifest field does not have the shape the agent expects."""

    def __init__(self, message: str, hint: str = "Push again from the notebook with %mlops push."):
        super().__init__(message)
        self.message, self.hint = message, hint


def format_version(m: dict):
    """The manifest's format version, as it says (not checked)."""
    return m.get("format_version")


def data_member(role: str) -> str:
    """The tar member that holds the pushed data of ``role``."""
    if role not in ROLES:
        raise ValueError(f"unknown data role {role!r}; roles are {ROLES}")
    return f"data/{role}.parquet"


def model_member(serialization: str) -> str:
    return next(m for m, s in MODEL_MEMBERS.items() if s == serialization)


def build(
    *,
    name: str,
    serialization: str,
    flavor: str | None = None,
    model_class: str | None = None,
    task: str | None = None,
    signature: dict | None = None,
    params: dict | None = None,
    data: dict | None = None,
    message: str = "",
    tags: dict | None = None,
    gate: dict | None = None,
    provenance: dict | None = None,
) -> dict:
    """A manifest with every field, in this format version. ``files`` is added by
    ``with_files`` once the members are known."""
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "serialization": serialization,
        "flavor": flavor,
        "model_class": model_class,
        "task": task,
        "signature": dict(signature or {}),
        "params": dict(params or {}),
        "data": dict(data or {}),
        "message": message or "",
        "tags": dict(tags or {}),
        "gate": dict(gate or {}),
        "provenance": dict(provenance or {}),
    }


def member_hash(m: dict):
    """The algorithm of the manifest's member digests, as it says (``check_fields`` checks)."""
    return m.get("files_hash", "sha256")


def member_hasher(algorithm: str = MEMBER_HASH):
    """A fresh hash object (``update``, ``hexdigest``) for one member's digest."""
    if algorithm == "blake3":
        from blake3 import blake3

        return blake3()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown member hash {algorithm!r}")


def with_digests(manifest: dict, digests: dict[str, str]) -> dict:
    """The manifest listing its members' digests, made by ``member_hasher()``."""
    return {
        **manifest,
        "format_version": FORMAT_VERSION,
        "files_hash": MEMBER_HASH,
        "files": dict(sorted(digests.items())),
    }


def with_files(manifest: dict, members: dict[str, bytes]) -> dict:
    """The manifest listing each member's digest, as the agent checks them."""
    digests = {}
    for name, data in members.items():
        h = member_hasher()
        h.update(data)
        digests[name] = h.hexdigest()
    return with_digests(manifest, digests)


def _is_str(v, limit: int = 10_000) -> bool:
    return isinstance(v, str) and len(v) <= limit


def check_fields(m: dict) -> None:
    """The manifest fields the agent stores or shows must have the types it expects."""
    if member_hash(m) not in MEMBER_HASHES:
        raise ManifestError(
            f"Unknown files_hash {member_hash(m)!r}; expected one of {', '.join(MEMBER_HASHES)}."
        )
    if m.get("task") not in TASKS:
        raise ManifestError(
            f"Unknown task {m.get('task')!r}; expected classification, regression or null."
        )
    for key in STRINGS:
        if m.get(key) is not None and not _is_str(m[key]):
            raise ManifestError(
                f"manifest field {key!r} must be a string of at most 10,000 characters."
            )
    for key in OBJECTS:
        if not isinstance(m.get(key, {}), dict):
            raise ManifestError(f"manifest field {key!r} must be an object.")
    tags = m.get("tags", {})
    if not all(_is_str(k, 200) and _is_str(v, 2000) for k, v in tags.items()):
        raise ManifestError("Tags must map short strings to strings.")
    columns = m.get("signature", {}).get("columns", [])
    if not isinstance(columns, list) or not all(
        isinstance(c, dict) and _is_str(c.get("name"), 1000) and _is_str(c.get("dtype"), 200)
        for c in columns
    ):
        raise ManifestError("signature.columns must be a list of {name, dtype} strings.")
    for role, fp in m.get("data", {}).items():
        ok = (
            role in ROLES
            and isinstance(fp, dict)
            and isinstance(fp.get("fingerprint"), str)
            and re.fullmatch(r"[0-9a-f]{64}", fp["fingerprint"])
            and isinstance(fp.get("rows"), int)
        )
        if not ok:
            raise ManifestError(
                f"data.{role} must be a fingerprint object with a sha256 and a row count."
            )
