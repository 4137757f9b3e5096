"""Ingest: a streamed upload becomes a durable blob, then a version. No HTTP in here."""

from __future__ import annotations

import queue
import threading

from . import bundle
from .errors import BadRequest, InvalidBundle, TooLarge
from .names import validate_name
from .store.blobs import DIGEST_RE, BlobStore


class StreamValidation:
    """A ``bundle.StreamCheck`` fed on its own thread: the members are hashed on a second core
    while the receiving thread hashes the whole body and writes it. The queue is bounded, so a
    slow check slows the upload instead of holding the body in memory."""

    DEPTH = 16  # chunks of at most 1 MiB (the server's chunk size)

    def __init__(self, expected_name: str):
        self.check = bundle.StreamCheck(expected_name)
        self._queue: queue.Queue = queue.Queue(self.DEPTH)
        self._thread = threading.Thread(target=self._run, name="bundle-check", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self.check.plain:  # once the stream is not plain, validate() decides
                self.check.feed(chunk)

    def feed(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def result(self) -> dict | None:
        self.close()
        return self.check.result()


class Upload:
    """One bundle being received: spooled and hashed by a blob writer as the bytes arrive,
    and, when ``expected_name`` is given, validated on the stream as well."""

    def __init__(self, store: BlobStore, limit: int, expected_name: str | None = None):
        self.blob = store.writer()
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
        self.blob.write(chunk)
        if self.stream is not None:
            self.stream.feed(chunk)

    def abort(self) -> None:
        if self.stream is not None:
            self.stream.close()
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
        return self.blob.finish()


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
