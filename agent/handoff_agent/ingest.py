"""Ingest: a streamed upload becomes a durable blob, then a version. No HTTP in here."""

from __future__ import annotations

import queue
import threading

from . import bundle
from .errors import BadRequest, InvalidBundle, TooLarge
from .names import validate_name
from .store.blobs import DIGEST_RE, BlobStore, SpoolRefused


class ChunkThread:
    """``fn`` called on each chunk fed, in order, on a thread of its own: the receiving thread
    only hands chunks on, while the hashing and writing run on the other core (hashlib and
    os.write release the GIL). The queue is bounded, so a slow consumer slows the upload
    instead of holding the body in memory. The first error stops the calls and is kept."""

    DEPTH = 8  # chunks of at most 1 MiB (the server's chunk size)

    def __init__(self, fn, name: str):
        self.fn, self.error, self.closed = fn, None, False
        self._queue: queue.Queue = queue.Queue(self.DEPTH)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self.fn(chunk)
                except BaseException as e:  # kept for close(); the rest is drained
                    self.error = e

    def feed(self, chunk: bytes) -> None:
        if not self.closed:  # nothing reads the queue once closed
            self._queue.put(chunk)

    def close(self) -> None:
        """Wait until every chunk fed has been handled."""
        if not self.closed:
            self.closed = True
            self._queue.put(None)
            self._thread.join()


class StreamValidation(ChunkThread):
    """A ``bundle.StreamCheck`` fed on its own thread: the members are hashed on one core
    while the whole body is hashed and written on another."""

    def __init__(self, expected_name: str):
        self.check = bundle.StreamCheck(expected_name)
        super().__init__(self._feed, "bundle-check")

    def _feed(self, chunk: bytes) -> None:
        if self.check.plain:  # once the stream is not plain, validate() decides
            self.check.feed(chunk)

    def result(self) -> dict | None:
        """The manifest, or None when the stream could not decide (then one read of the
        spooled bytes does, and names what is wrong)."""
        self.close()
        return None if self.error is not None else self.check.result()


class Upload:
    """One bundle being received: spooled and hashed by a blob writer as the bytes arrive
    (on a thread of its own), and, when ``expected_name`` is given, validated on the stream
    as well. An adopted spool file (``blob`` given) is read by ``absorb`` instead."""

    def __init__(self, store: BlobStore, limit: int, expected_name: str | None = None, blob=None):
        self.writing: list[ChunkThread] = []
        if blob is None:
            blob = store.writer()
            # Hashing and writing on threads of their own: on two cores, one thread doing
            # both was the upload's bottleneck (1 GiB: 1.8 s -> 1.6 s).
            self.writing = [
                ChunkThread(blob.hash, "blob-hash"),
                ChunkThread(blob.append, "blob-write"),
            ]
        self.blob = blob
        self.size = 0
        self.limit = limit
        self.overflow = False
        self.stream = StreamValidation(expected_name) if expected_name else None

    def write(self, chunk: bytes) -> None:
        if self.overflow:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            # Keep reading so the client gets an answer, but stop storing.
            self.overflow = True
            self.abort()
            return
        for thread in self.writing:
            thread.feed(chunk)
        if self.stream is not None:
            self.stream.feed(chunk)

    def absorb(self) -> None:
        """Read an adopted spool file once: hash it and validate it on the stream."""
        feed = self.stream.feed if self.stream is not None else None
        self.blob.absorb(feed, self.limit)
        self.size = self.blob.size

    def abort(self) -> None:
        if self.stream is not None:
            self.stream.close()
        for thread in self.writing:
            thread.close()  # no write may land after the spool file is gone
        self.blob.abort()

    def manifest(self, name: str) -> dict:
        """The bundle's checked manifest: from the stream when it was plain, else from one
        read of the spooled bytes, whose refusal names what is wrong."""
        found = self.stream.result() if self.stream is not None else None
        if found is not None:
            return found
        with self.blob.reader() as f:
            return bundle.validate(f, expected_name=name)

    def sync(self) -> str:
        for thread in self.writing:
            thread.close()
        for thread in self.writing:
            if thread.error is not None:
                raise thread.error
        return self.blob.finish()


def spool_refused(e: Exception) -> InvalidBundle:
    return InvalidBundle(
        f"The spool entry was refused: {e}.",
        "Push again; the kernel writes a fresh entry (or set c.Handoff.spool = False to send "
        "the bundle over HTTP).",
        code="spool_refused",
    )


def too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"The bundle is larger than the agent's limit of {limit / 2**20:.0f} MiB.",
        "Raise c.HandoffAgent.max_bundle_size, or push less data (--max-rows).",
    )


class IngestManager:
    def __init__(self, store: BlobStore, registry, limit: int, checks: list[str], policy=None):
        self.policy = policy
        self.store = store
        self.registry = registry
        self.limit = limit
        self.checks = checks

    def begin(self, name: str, declared_size: int | None) -> Upload:
        validate_name(name)
        if declared_size is not None and declared_size > self.limit:
            raise too_large(self.limit)
        return Upload(self.store, self.limit, expected_name=name)

    def store_blob(self, upload: Upload, name: str, expected: str | None) -> tuple[str, dict]:
        """Make the upload durable and content-addressed. Runs off the event loop."""
        try:
            if upload.overflow:
                raise too_large(self.limit)
            if upload.size == 0:
                raise BadRequest("The upload was empty.", "Send a bundle as the request body.")
            digest = upload.sync()
            if expected is not None and expected != digest:
                raise InvalidBundle(
                    "The upload's sha256 does not match the digest the client declared.",
                    "The upload was truncated or altered in transit. Push again.",
                    code="digest_mismatch",
                )
            manifest = upload.manifest(name)
            if self.policy is not None:
                self.policy.validate_overrides(manifest.get("gate"))
            upload.blob.commit(digest)
            return digest, manifest
        finally:
            upload.abort()

    @property
    def spool(self) -> str | None:
        """Where a kernel on this machine may write a bundle for ``adopt``; None when the
        store has no local filesystem to adopt into (S3)."""
        found = getattr(self.store, "spool", None)
        return str(found) if found is not None else None

    def adopt(self, name: str, entry, expected: str | None) -> Upload:
        """A bundle a local kernel wrote into the spool, taken over without a copy: read once
        to hash and validate it, as an upload is. Runs off the event loop; then
        ``store_blob``. A refused entry is removed and nothing is stored."""
        validate_name(name)
        if self.spool is None:
            raise BadRequest(
                "This agent's blob store has no spool.",
                "Send the bundle as the request body (application/x-tar).",
                code="no_spool",
            )
        if expected is None:
            raise BadRequest("A spool hand-over needs X-Handoff-Digest.", code="bad_digest_header")
        try:
            blob = self.store.adopt(entry)
        except SpoolRefused as e:
            raise spool_refused(e) from None
        upload = Upload(self.store, self.limit, expected_name=name, blob=blob)
        try:
            upload.absorb()
        except SpoolRefused as e:
            upload.abort()
            raise spool_refused(e) from None
        except BaseException:
            upload.abort()
            raise
        return upload

    @staticmethod
    def parse_digest(header: str | None) -> str | None:
        if not header:
            return None
        value = header.removeprefix("sha256:").lower()
        if not DIGEST_RE.fullmatch(value):
            raise BadRequest(
                "X-Handoff-Digest must be 'sha256:' followed by 64 hex digits.",
                code="bad_digest_header",
            )
        return value
