"""The bundle format, public: the extension writes bundles to it, the agent validates them.

A bundle is an uncompressed tar holding ``manifest.json``, one model member and optional
parquet data members. The agent accepts nothing else: only plain regular files (no sparse,
device, fifo, link, directory or contiguous members), no duplicates, no unknown names.
Validation only reads bytes and JSON; it never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path

from .errors import InvalidBundle

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_MEMBERS = {"model.pkl": "pickle", "model.skops": "skops"}
DATA_MEMBERS = {
    "data/X.parquet": "X",
    "data/y.parquet": "y",
    "data/sensitive.parquet": "sensitive",
    "data/reference_X.parquet": "reference_X",
    "data/reference_y.parquet": "reference_y",
}
MEMBERS = {MANIFEST, *MODEL_MEMBERS, *DATA_MEMBERS}
MAX_MANIFEST = 4 << 20
CHUNK = 1 << 20


BLOCK = 512


def tar_header(name: str, size: int) -> bytes:
    """A deterministic ustar header: no times, no owners, so equal content gives equal bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def write_tar(out, members: list[tuple[str, bytes | Path]]) -> None:
    """Write ``members`` (bytes, or a file to copy) as a deterministic tar to ``out``."""
    for name, data in members:
        if isinstance(data, Path):
            size = data.stat().st_size
            out.write(tar_header(name, size))
            with open(data, "rb") as f:
                while chunk := f.read(CHUNK):
                    out.write(chunk)
        else:
            size = len(data)
            out.write(tar_header(name, size))
            out.write(data)
        out.write(padding(size))
    out.write(b"\0" * (2 * BLOCK))


KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
    tarfile.DIRTYPE: "a directory",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a GNU sparse file",
}


def check_member(member: tarfile.TarInfo, where: str, hint: str) -> None:
    """Refuse every member that is not a plain regular file, naming what it is.

    tarfile counts GNU sparse (old and PAX forms) and contiguous members as regular files and
    expands the holes on read, so ``isreg()`` alone lets them through."""
    if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and not member.issparse():
        return
    kind = KINDS.get(member.type) or ("a sparse file" if member.issparse() else None)
    raise InvalidBundle(
        f"The {where} member {member.name!r} is {kind or 'a special member'}; only regular "
        "files are accepted.",
        hint,
    )


def _bad(message: str, hint: str = "Push again from the notebook with %mlops push.") -> None:
    raise InvalidBundle(message, hint)


def read_manifest(path: Path) -> dict:
    """Read the manifest of a stored bundle without checking members again."""
    with tarfile.open(path, mode="r:") as tar:
        f = tar.extractfile(MANIFEST)
        return json.loads(f.read())


def validate(path: Path, expected_name: str | None = None) -> dict:
    """Check a received bundle and return its manifest, or raise ``InvalidBundle``."""
    try:
        tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as e:
        _bad(f"The upload is not an uncompressed tar bundle ({e}).")
    with tar:
        digests: dict[str, str] = {}
        manifest_bytes = None
        try:
            for member in tar:
                name = member.name
                if name in digests or (name == MANIFEST and manifest_bytes is not None):
                    _bad(f"The bundle holds {name!r} twice.")
                check_member(member, "bundle", "Push again from the notebook with %mlops push.")
                if name not in MEMBERS:
                    _bad(
                        f"The bundle holds an unknown member {name!r}.",
                        f"A bundle may only hold: {', '.join(sorted(MEMBERS))}.",
                    )
                f = tar.extractfile(member)
                if name == MANIFEST:
                    if member.size > MAX_MANIFEST:
                        _bad("manifest.json is too large.")
                    manifest_bytes = f.read()
                    continue
                h = hashlib.sha256()
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                digests[name] = h.hexdigest()
        except tarfile.TarError as e:
            _bad(f"The bundle is not a valid tar archive ({e}).")
        except EOFError:
            _bad("The bundle is truncated.")
    if manifest_bytes is None:
        _bad("The bundle has no manifest.json.")
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as e:
        _bad(f"manifest.json is not valid JSON ({e}).")
    if not isinstance(manifest, dict):
        _bad("manifest.json must hold a JSON object.")
    if manifest.get("format_version") != FORMAT_VERSION:
        _bad(
            f"Unsupported bundle format {manifest.get('format_version')!r}.",
            "Upgrade jupyter-handoff in the kernel and the agent to the same version.",
        )
    if expected_name is not None and manifest.get("name") != expected_name:
        _bad(f"The manifest names {manifest.get('name')!r}, but the push was to {expected_name!r}.")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(digests):
        _bad("manifest.json does not list exactly the members of the bundle.")
    for name, digest in digests.items():
        if files[name] != digest:
            raise InvalidBundle(
                f"The digest of {name} does not match its manifest.",
                "The bundle was altered or corrupted in transit. Push again.",
                code="digest_mismatch",
            )
    check_fields(manifest)
    models = [m for m in digests if m in MODEL_MEMBERS]
    if len(models) != 1:
        _bad("A bundle must hold exactly one model (model.pkl or model.skops).")
    if manifest.get("serialization") != MODEL_MEMBERS[models[0]]:
        _bad("The manifest's serialization does not match the model member.")
    return manifest


ROLES = {"X", "y", "sensitive", "reference_X", "reference_y"}
TASKS = {None, "classification", "regression"}


def _is_str(v, limit: int = 10_000) -> bool:
    return isinstance(v, str) and len(v) <= limit


def check_fields(m: dict) -> None:
    """The manifest fields the agent stores or shows must have the types it expects."""
    if m.get("task") not in TASKS:
        _bad(f"Unknown task {m.get('task')!r}; expected classification, regression or null.")
    for key in ("flavor", "model_class", "message"):
        if m.get(key) is not None and not _is_str(m[key]):
            _bad(f"manifest field {key!r} must be a string of at most 10,000 characters.")
    for key in ("tags", "params", "provenance", "signature", "gate", "data"):
        if not isinstance(m.get(key, {}), dict):
            _bad(f"manifest field {key!r} must be an object.")
    tags = m.get("tags", {})
    if not all(_is_str(k, 200) and _is_str(v, 2000) for k, v in tags.items()):
        _bad("Tags must map short strings to strings.")
    columns = m.get("signature", {}).get("columns", [])
    if not isinstance(columns, list) or not all(
        isinstance(c, dict) and _is_str(c.get("name"), 1000) and _is_str(c.get("dtype"), 200)
        for c in columns
    ):
        _bad("signature.columns must be a list of {name, dtype} strings.")
    for role, fp in m.get("data", {}).items():
        ok = (
            role in ROLES
            and isinstance(fp, dict)
            and isinstance(fp.get("fingerprint"), str)
            and re.fullmatch(r"[0-9a-f]{64}", fp["fingerprint"])
            and isinstance(fp.get("rows"), int)
        )
        if not ok:
            _bad(f"data.{role} must be a fingerprint object with a sha256 and a row count.")
