"""The bundle format, public: the extension writes bundles to it, the agent validates them.

A bundle is an uncompressed tar holding ``manifest.json``, one model member and optional
parquet data members. The agent accepts nothing else: only plain regular files (no sparse,
device, fifo, link, directory or contiguous members), no duplicates, no unknown names.
Validation only reads bytes and JSON; it never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from . import manifest as shape
from .errors import InvalidBundle

# The manifest's shape lives in manifest.py (the notebook side builds with it); re-exported.
FORMAT_VERSION = shape.FORMAT_VERSION
MANIFEST = shape.MANIFEST
MODEL_MEMBERS = shape.MODEL_MEMBERS
DATA_MEMBERS = shape.DATA_MEMBERS
MEMBERS = shape.MEMBERS
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
    """Write ``members`` (bytes, a file to copy, or an open seekable binary file, copied from
    its start) as a deterministic tar to ``out``."""
    for name, data in members:
        if hasattr(data, "read"):
            data.seek(0, 2)
            size = data.tell()
            data.seek(0)
            out.write(tar_header(name, size))
            while chunk := data.read(CHUNK):
                out.write(chunk)
        elif isinstance(data, Path):
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


def open_tar(src) -> tarfile.TarFile:
    """A tar from a path or an open binary file (a blob store's verified local copy)."""
    if hasattr(src, "read"):
        return tarfile.open(fileobj=src, mode="r:")
    return tarfile.open(src, mode="r:")


def read_members(f, wanted) -> dict[str, bytes]:
    """The bytes of the ``wanted`` regular members of the bundle streamed from ``f`` (a blob
    store's verifying reader, ``open``), which is read to its end: the digest is checked only
    there. For data the agent reads itself, never model code."""
    found = {}
    with tarfile.open(fileobj=f, mode="r|") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                found[member.name] = tar.extractfile(member).read()
    while f.read(CHUNK):
        pass
    return found


def read_manifest(path) -> dict:
    """Read the manifest of a stored bundle (a path or open file) without checking members."""
    with open_tar(path) as tar:
        f = tar.extractfile(MANIFEST)
        return json.loads(f.read())


def validate(path, expected_name: str | None = None) -> dict:
    """Check a received bundle (a path or open file); return its manifest, or raise
    ``InvalidBundle``."""
    try:
        tar = open_tar(path)  # closed by the with below
    except (tarfile.TarError, OSError) as e:
        _bad(f"The upload is not an uncompressed tar bundle ({e}).")
    with tar:
        members: dict[str, tarfile.TarInfo] = {}
        manifest_bytes = None
        try:
            for member in tar:
                name = member.name
                if name in members or (name == MANIFEST and manifest_bytes is not None):
                    _bad(f"The bundle holds {name!r} twice.")
                check_member(member, "bundle", "Push again from the notebook with %mlops push.")
                if name not in MEMBERS:
                    _bad(
                        f"The bundle holds an unknown member {name!r}.",
                        f"A bundle may only hold: {', '.join(sorted(MEMBERS))}.",
                    )
                if name == MANIFEST:
                    if member.size > MAX_MANIFEST:
                        _bad("manifest.json is too large.")
                    manifest_bytes = tar.extractfile(member).read()
                else:
                    members[name] = member
            # The manifest names the algorithm of the members' digests: hash them after it,
            # once it is known to be one this agent reads.
            manifest = loaded_manifest(manifest_bytes, expected_name)
            algorithm = shape.member_hash(manifest)
            digests = {}
            for name, member in members.items():
                f, h = tar.extractfile(member), shape.member_hasher(algorithm)
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                digests[name] = h.hexdigest()
        except tarfile.TarError as e:
            _bad(f"The bundle is not a valid tar archive ({e}).")
        except EOFError:
            _bad("The bundle is truncated.")
    return checked_manifest(manifest, digests, algorithm)


def loaded_manifest(manifest_bytes: bytes | None, expected_name: str | None) -> dict:
    """manifest.json's bytes as the object they must hold, of a format this agent reads, for
    the push's name, its fields of the agent's shapes: all before any member is hashed."""
    if manifest_bytes is None:
        _bad("The bundle has no manifest.json.")
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as e:
        _bad(f"manifest.json is not valid JSON ({e}).")
    if not isinstance(manifest, dict):
        _bad("manifest.json must hold a JSON object.")
    if (version := shape.format_version(manifest)) not in shape.FORMAT_VERSIONS:
        _bad(
            f"Unsupported bundle format {version!r}.",
            "Upgrade jupyter-handoff in the kernel and the agent to the same version.",
        )
    if expected_name is not None and manifest.get("name") != expected_name:
        _bad(f"The manifest names {manifest.get('name')!r}, but the push was to {expected_name!r}.")
    check_fields(manifest)
    return manifest


def checked_manifest(manifest: dict, digests: dict[str, str], hashed_with: str) -> dict:
    """The manifest (from ``loaded_manifest``), once every member has been hashed by
    ``hashed_with``: it must list exactly those members with those digests."""
    if shape.member_hash(manifest) != hashed_with:  # the callers hash as the manifest says
        _bad(f"The members were hashed with {hashed_with}, not {shape.member_hash(manifest)}.")
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
    models = [m for m in digests if m in MODEL_MEMBERS]
    if len(models) != 1:
        _bad("A bundle must hold exactly one model (model.pkl or model.skops).")
    if manifest.get("serialization") != MODEL_MEMBERS[models[0]]:
        _bad("The manifest's serialization does not match the model member.")
    return manifest


def check_fields(m: dict) -> None:
    """The manifest fields the agent stores or shows must have the types it expects."""
    try:
        shape.check_fields(m)
    except shape.ManifestError as e:
        raise InvalidBundle(e.message, e.hint) from None


class StreamCheck:
    """Validate a bundle as its bytes arrive, so the agent never reads it back.

    ``feed`` takes the bytes in order; ``result`` returns the checked manifest. Only the plain
    case is judged on the stream: ustar headers of regular files with known names, each once,
    then the end. Anything else (a link, a device, a pax or GNU header, a duplicate, an unknown
    name, a cut) makes ``result`` return None, and the caller runs ``validate`` on the stored
    bytes, which refuses it with the usual message: one set of rules, and a hostile upload is
    the only one that pays for a second read.
    """

    def __init__(self, expected_name: str | None = None):
        self.expected_name = expected_name
        self.digests: dict[str, str] = {}
        self.manifest: bytearray | None = None
        self.plain = True  # False: leave the verdict to validate()
        self._header = bytearray()
        self._name: str | None = None
        self._hash = None
        self._left = 0  # bytes of the current member still to come
        self._pad = 0  # padding after it
        self._ended = False
        # As ``assemble`` lays a bundle out: every header as tar_header() writes it, zero
        # padding, and the end as two zero blocks and nothing after. A followed spool entry
        # has no whole-bundle digest from the kernel; this, with the member and manifest
        # digests, pins each of its bytes instead (``laid_out``).
        self.canonical = True
        self._after_end = 0  # bytes after the first zero block

    def feed(self, chunk) -> None:
        view = memoryview(chunk)
        while view and self.plain:
            if self._ended:  # tarfile stops at the first zero block and ignores what follows
                self._after_end += len(view)
                if self.canonical and (self._after_end > BLOCK or view != bytes(len(view))):
                    self.canonical = False
                return
            if self._left:
                part, view = view[: self._left], view[self._left :]
                self._left -= len(part)
                if self._hash is not None:
                    self._hash.update(part)
                else:
                    self.manifest += part
                if not self._left:
                    self._close_member()
            elif self._pad:
                n = min(self._pad, len(view))
                if view[:n] != bytes(n):
                    self.canonical = False
                self._pad -= n
                view = view[n:]
            else:
                n = min(BLOCK - len(self._header), len(view))
                self._header += view[:n]
                view = view[n:]
                if len(self._header) == BLOCK:
                    self._open_member(bytes(self._header))
                    self._header.clear()

    def _open_member(self, block: bytes) -> None:
        if block == b"\0" * BLOCK:
            self._ended = True
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            self.plain = False
            return
        name = info.name
        known = name in MEMBERS and name not in self.digests
        if name == MANIFEST:
            known = self.manifest is None and info.size <= MAX_MANIFEST
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or info.issparse() or not known:
            self.plain = False
            return
        if block != tar_header(name, info.size):
            self.canonical = False
        self._name, self._left, self._pad = name, info.size, -info.size % BLOCK
        if name == MANIFEST:
            self.manifest, self._hash = bytearray(), None
        else:
            # Handoff's own member hash: the manifest, which names it, comes last. A bundle
            # naming another is left to ``validate`` (``result``).
            self._hash = shape.member_hasher()
        if not self._left:
            self._close_member()

    def _close_member(self) -> None:
        if self._hash is not None:
            self.digests[self._name] = self._hash.hexdigest()
        self._name, self._hash = None, None

    def laid_out(self, manifest_digest: str) -> bool:
        """Whether the bytes fed are exactly the bundle ``assemble`` writes with a manifest of
        this sha256: with ``result``'s member digests, every byte is then the kernel's."""
        return (
            self.plain
            and self.canonical
            and self._ended
            and self._after_end == BLOCK
            and self.manifest is not None
            and hashlib.sha256(self.manifest).hexdigest() == manifest_digest
        )

    def result(self) -> dict | None:
        """The checked manifest (raises ``InvalidBundle``), or None when ``validate`` must
        judge the stored bytes."""
        cut = self._left or self._header or (self._pad and not self._ended)
        if not self.plain or cut or (self.manifest is None and not self.digests):
            return None
        manifest = loaded_manifest(
            bytes(self.manifest) if self.manifest is not None else None, self.expected_name
        )
        if shape.member_hash(manifest) != shape.MEMBER_HASH:
            return None
        return checked_manifest(manifest, self.digests, shape.MEMBER_HASH)
