"""Ingest: a streamed upload becomes a durable blob, then a version. No HTTP in here."""

from __future__ import annotations

from . import bundle
from .errors import BadRequest, InvalidBundle, TooLarge
from .names import validate_name
from .store.blobs import DIGEST_RE, BlobStore


class Upload:
    """One bundle being received: spooled and hashed by a blob writer as the bytes arrive."""

    def __init__(self, store: BlobStore, limit: int):
        self.blob = store.writer()
        self.size = 0
        self.limit = limit
        self.overflow = False

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

    def abort(self) -> None:
        self.blob.abort()

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
        return Upload(self.store, self.limit)

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
            with upload.blob.reader() as f:
                manifest = bundle.validate(f, expected_name=name)
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
