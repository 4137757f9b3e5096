"""The bundle manifest's shape, in one place: its fields, its members, and their checks.

The notebook side builds a manifest with ``build`` and checks it with ``check_fields`` before
it uploads; the agent runs the same ``check_fields`` on what it receives (``bundle.validate``).
Standard library only, so ``%mlops push`` pays nothing for importing it.
"""

from __future__ import annotations

import hashlib
import re

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_MEMBERS = {"model.pkl": "pickle", "model.skops": "skops"}
SERIALIZATIONS = tuple(MODEL_MEMBERS.values())
ROLES = ("X", "y", "sensitive", "reference_X", "reference_y")  # pushed data, by role
DATA_MEMBERS = {f"data/{role}.parquet": role for role in ROLES}
MEMBERS = {MANIFEST, *MODEL_MEMBERS, *DATA_MEMBERS}
TASKS = (None, "classification", "regression")
INPUT_KINDS = ("table", "array", "text")  # signature.input; absent means "table"

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


def with_files(manifest: dict, members: dict[str, bytes]) -> dict:
    """The manifest listing each member's sha256, as the agent checks them."""
    return {**manifest, "files": {n: hashlib.sha256(b).hexdigest() for n, b in members.items()}}


def _is_str(v, limit: int = 10_000) -> bool:
    return isinstance(v, str) and len(v) <= limit


def check_fields(m: dict) -> None:
    """The manifest fields the agent stores or shows must have the types it expects."""
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
