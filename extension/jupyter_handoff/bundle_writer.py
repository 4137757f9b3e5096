"""Turn a model and its data into a bundle, validating what the user gave on the way.

The bundle is built as a list of byte parts (tar headers, members, padding) and never copied
into one buffer: the model is pickled into pieces (its big arrays as views, not copies), then
the members are hashed on one thread while, on another, the parts are written into a local
agent's spool (which the agent reads as it is written) or hashed as a whole, to be streamed
over HTTP. The tar is deterministic (no times, no owners), so the same model and data give
the same bytes.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import hashlib
import json
import os
import pickle
import platform
import socket
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata

from handoff_agent.bundle import padding, tar_header
from handoff_agent.manifest import MANIFEST, member_hasher, model_member, with_digests
from handoff_agent.writeback import start_write_back, write_all

from .errors import HandoffUsageError

BLOCK = 512
KEY_PACKAGES = ("scikit-learn", "numpy", "pandas", "scipy", "xgboost", "lightgbm", "skops")
IMPORT_NAMES = {"scikit-learn": "sklearn"}
PARALLEL_HASH = 4 << 20  # below this a second thread costs more than it saves
SPOOL_WRITEBACK = 8 << 20  # a spool entry goes to disk window by window, as it is written


@dataclass
class Bundle:
    parts: list = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    digest: str = ""
    size: int = 0
    spooled: bool = False  # every part went into the sink given to assemble()
    manifest_digest: str = ""  # the sha256 of the manifest member's bytes

    def hashed(self) -> Bundle:
        """With ``digest`` set: a bundle written into a spool entry has none (the agent
        hashes it as it follows the entry), but one sent over HTTP needs it."""
        if not self.digest:
            sha = hashlib.sha256()
            for p in self.parts:
                sha.update(p)
            self.digest = sha.hexdigest()
        return self


class Pieces:
    """A member as the pieces pickle wrote, in order: its frames (bytes) and its big buffers
    (views of the model's arrays: nothing is copied into one buffer, which costs more than
    pickling itself). The model must not change until the push has returned."""

    def __init__(self):
        self.parts: list = []
        self.size = 0

    def write(self, piece) -> int:
        if not isinstance(piece, bytes):  # a PickleBuffer: a flat byte view of the array
            view = memoryview(piece)
            piece = view.cast("B") if view.c_contiguous else view.tobytes()
        n = len(piece)
        if n:
            self.parts.append(piece)
            self.size += n
        return n

    def __len__(self) -> int:
        return self.size


class SpoolSink:
    """A bundle's parts written into a spool entry (a file descriptor) that the agent reads
    as it is written, each ``SPOOL_WRITEBACK`` handed to the disk: the agent's fsync then
    finds it done, and the agent can drop from the page cache what it has read (clean
    pages only). ``written`` turns False at the first failure (a full disk, a quota): the
    caller then sends the bundle over HTTP instead."""

    def __init__(self, fd: int):
        self.fd, self.written = fd, True
        self._at = self._handed = 0  # bytes written, bytes handed to the disk

    def write(self, parts: list) -> None:
        for part in parts:
            if not self.written:
                return
            try:
                write_all(self.fd, part)
            except OSError:
                self.written = False
                return
            self._at += len(part)
            if self._at - self._handed >= SPOOL_WRITEBACK:
                start_write_back(self.fd, self._handed, self._at - self._handed)
                self._handed = self._at


def _parts_of(data) -> list:
    return data.parts if isinstance(data, Pieces) else [memoryview(data)]


def assemble(members: dict, manifest: dict | Callable[[], tuple], sink=None) -> Bundle:
    """Lay out the tar: members (bytes or ``Pieces``) in name order, then the manifest, which
    lists their digests.

    The member bytes are read by two threads at once (the hashers and os.write let go of
    the GIL): one hashes each member for the manifest; the other, given a ``sink`` (a file
    descriptor: a spool entry the agent follows), writes the parts into it, and ``spooled``
    says whether all of it went in; else it hashes the whole bundle for ``digest``. The
    agent hashes a followed entry itself, and the manifest's digest and the layout pin it
    (``Bundle.hashed`` gives the digest when it is needed after all). Nothing is copied: the
    parts are views of the members. Members come first because the manifest can only be
    written once they are hashed; the agent reads a bundle in any order.

    ``manifest`` may instead be a callable, called once ``members`` are being written and
    hashed, that returns ``(more members, manifest)``: the push's data, prepared on a thread
    while the model is on its way, then laid out after it. What it raises ends the bundle.
    """
    parts: list = []
    bundle_sha = hashlib.sha256()
    digests: dict[str, str] = {}
    spool = SpoolSink(sink) if sink is not None else None

    def hash_members(batch: dict) -> None:
        for name, data in batch.items():
            h = member_hasher()
            for p in _parts_of(data):
                h.update(p)
            digests[name] = h.hexdigest()

    def hash_bundle(some: list) -> None:
        for p in some:
            bundle_sha.update(p)

    other = hash_bundle if spool is None else spool.write

    def lay_out(batch: dict, meanwhile=None):
        """Hash ``batch`` on a second thread while its parts are written (or hashed whole);
        ``meanwhile()`` runs once they are written, while the hashing goes on."""
        some = [p for name, data in sorted(batch.items()) for p in _member(name, data)]
        parts.extend(some)
        if sum(len(d) for d in batch.values()) < PARALLEL_HASH:
            hash_members(batch)
            other(some)
            return meanwhile() if meanwhile else None
        with ThreadPoolExecutor(1, thread_name_prefix="handoff-bundle") as pool:
            job = pool.submit(hash_members, batch)
            other(some)
            found = meanwhile() if meanwhile else None
            job.result()
        return found

    if callable(manifest):
        more, manifest = lay_out(members, manifest)
        lay_out(more)
    else:
        lay_out(members)
    manifest = with_digests(manifest, digests)
    text = json.dumps(manifest, indent=1, sort_keys=True).encode()
    tail = _member(MANIFEST, text)
    tail.append(b"\0" * (2 * BLOCK))
    other(tail)
    parts += tail
    size = sum(len(p) for p in parts)
    digest = bundle_sha.hexdigest() if spool is None else ""
    spooled = spool is not None and spool.written
    return Bundle(parts, manifest, digest, size, spooled, hashlib.sha256(text).hexdigest())


def _member(name: str, data) -> list:
    out = [tar_header(name, len(data)), *_parts_of(data)]
    if len(data) % BLOCK:
        out.append(padding(len(data)))
    return out


def serialize_model(model, fmt: str) -> tuple[str, bytes | Pieces]:
    if fmt == "skops":
        try:
            import skops.io as sio
        except ImportError:
            raise HandoffUsageError(
                "--format skops needs the skops package.", "pip install skops"
            ) from None
        try:
            return model_member("skops"), sio.dumps(model)
        except Exception as e:
            raise HandoffUsageError(
                f"skops cannot serialize this model ({type(e).__name__}: {e}).",
                "Push it with --format pickle instead.",
            ) from None
    try:
        pieces = Pieces()
        pickle.dump(model, pieces, protocol=5)
        return model_member("pickle"), pieces
    except Exception as e:
        raise HandoffUsageError(
            f"The model cannot be pickled ({type(e).__name__}: {e}).",
            "Lambdas, open files and locks cannot be handed off. Use named functions defined "
            "in an importable module.",
        ) from None


def check_model(model) -> None:
    if isinstance(model, type):
        raise HandoffUsageError(
            f"{model.__name__} is a class, not a fitted model.",
            f"Push the object you fitted, e.g. clf = {model.__name__}().fit(X, y).",
        )
    if not callable(getattr(model, "predict", None)):
        raise HandoffUsageError(
            f"A {type(model).__name__} is not a model: it has no predict() method.",
            "Pass a fitted estimator, e.g. a scikit-learn model after .fit().",
        )
    if not is_fitted(model):
        raise HandoffUsageError(
            f"This {type(model).__name__} is not fitted: every check would fail.",
            "Call .fit(X, y) on it first, then push it.",
        )


def is_fitted(model, depth: int = 0) -> bool:
    """sklearn's own test when sklearn is already loaded (never import it just for this);
    else the convention that fit() sets attributes ending in ``_``, or a wrapper's fitted
    model in one of its attributes (``self.inner = LogisticRegression().fit(…)``)."""
    sklearn_base = sys.modules.get("sklearn.base")
    if sklearn_base is not None and isinstance(model, sklearn_base.BaseEstimator):
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(model)
        except NotFittedError:
            return False
        except Exception:  # an estimator check_is_fitted cannot judge: let the checks do it
            return True
        return True
    if not callable(getattr(model, "fit", None)):
        return True  # not an estimator (a plain wrapper or function model): nothing to judge
    if any(k.endswith("_") and not k.startswith("_") for k in dir(model)):
        return True
    held = vars(model).values() if hasattr(model, "__dict__") and depth < 3 else ()
    return any(
        callable(getattr(v, "predict", None)) and is_fitted(v, depth + 1)
        for v in held
        if v is not model
    )


def feature_names(model) -> list[str] | None:
    """The columns the model was fitted on, when it says (``feature_names_in_``)."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return None
    try:
        return [str(n) for n in names]
    except TypeError:
        return None


def environment() -> dict:
    loaded = tuple(d for d in KEY_PACKAGES if IMPORT_NAMES.get(d, d) in sys.modules)
    return {
        "python": platform.python_version(),
        "platform": sys.platform,
        "packages": dict(_versions(loaded)),
    }


@functools.lru_cache(maxsize=32)
def _versions(loaded: tuple[str, ...]) -> tuple:
    """The versions of the key packages this kernel has imported. Cached per set: reading
    package metadata costs tens of milliseconds a push, and a module already imported keeps
    its version for the life of the kernel."""
    found = []
    for dist in loaded:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append((dist, metadata.version(dist)))
    return tuple(found)


def git_identity(notebook: str | None) -> dict | None:
    """The commit of the repository holding the notebook (or the working dir), if any.

    ``git rev-parse`` runs once per state of the repository's HEAD: a subprocess costs tens
    of milliseconds a push on a busy machine, and the answer only changes when HEAD or the
    ref it names does (a commit, a checkout, a reset, packed refs)."""
    from pathlib import Path

    start = Path(notebook).resolve().parent if notebook else Path.cwd()
    dot = next((p / ".git" for p in [start, *start.parents] if (p / ".git").exists()), None)
    if dot is None:
        return None
    state = _head_state(dot)
    if state is None:  # not readable as plain files: ask git every time
        return _rev_parse(str(start))
    found = _git_cached(str(start), state)
    return dict(found) if found is not None else None


@functools.lru_cache(maxsize=64)
def _git_cached(start: str, state: tuple) -> tuple | None:
    found = _rev_parse(start)
    return tuple(found.items()) if found is not None else None


def _rev_parse(start: str) -> dict | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", start, "rev-parse", "HEAD", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": out[0], "repo": out[1]} if len(out) == 2 else None


def _head_state(dot) -> tuple | None:
    """What HEAD resolves through: its text and the identity (inode, size, mtime) of each
    file git reads to resolve it, in the worktree's git dir and the common one. Git replaces
    these files by rename, so any change of commit changes this tuple."""
    try:
        gitdir = dot
        if dot.is_file():  # a worktree or submodule: "gitdir: PATH"
            text = dot.read_text().strip()
            if not text.startswith("gitdir:"):
                return None
            gitdir = (dot.parent / text.removeprefix("gitdir:").strip()).resolve()
        head = (gitdir / "HEAD").read_text().strip()
        common = gitdir
        with contextlib.suppress(FileNotFoundError):
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        files = [gitdir / "HEAD", common / "packed-refs"]
        if head.startswith("ref:"):
            ref = head.removeprefix("ref:").strip()
            files += [gitdir / ref, common / ref]
    except (OSError, ValueError):
        return None
    state: list = [str(gitdir), head]
    for f in files:
        try:
            st = os.stat(f)
        except FileNotFoundError:
            state.append(None)
        except OSError:
            return None
        else:
            state.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(state)


def provenance(notebook: str | None, cell_source: str | None) -> dict:
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return {
        "notebook": notebook,
        "cell_hash": hashlib.sha256(cell_source.encode()).hexdigest() if cell_source else None,
        "user": user,
        "host": socket.gethostname(),
        "environment": environment(),
        "git": git_identity(notebook),
        **_triggered_by(),
    }


def _triggered_by() -> dict:
    """A push from a notebook the agent ran because a watched source changed names that
    change (the agent sets HANDOFF_TRIGGERED_BY in the kernel's environment)."""
    raw = os.environ.get("HANDOFF_TRIGGERED_BY")
    if not raw:
        return {}
    try:
        cause = json.loads(raw)
    except ValueError:
        return {}
    return {"triggered_by": cause} if isinstance(cause, dict) else {}


def json_safe_params(model) -> dict:
    get = getattr(model, "get_params", None)
    if not callable(get):
        return {}
    try:
        params = get(deep=False)
    except Exception:
        return {}
    out = {}
    for k, v in params.items():
        out[str(k)] = v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)[:200]
    return out
