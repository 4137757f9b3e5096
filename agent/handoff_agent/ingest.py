"""Ingest: a streamed upload becomes a durable blob, then a version. No HTTP in here."""

from __future__ import annotations

import hashlib
import os

from . import bundle
from .blobs import DIGEST_RE, BlobStore
from .errors import BadRequest, InvalidBundle, TooLarge
from .names import validate_name
from .registry import Registry


class Upload:
    """One bundle being received: written to a temp file and hashed as the bytes arrive."""

    def __init__(self, store: BlobStore, limit: int):
        self.fd, self.temp = store.new_temp()
        self.sha = hashlib.sha256()
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
        self.sha.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def abort(self) -> None:
        self.close()
        self.temp.unlink(missing_ok=True)

    def sync(self) -> str:
        os.fsync(self.fd)
        self.close()
        return self.sha.hexdigest()


def too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"The bundle is larger than the agent's limit of {limit / 2**20:.0f} MiB.",
        "Raise c.HandoffAgent.max_bundle_size, or push less data (--max-rows).",
    )


class IngestManager:
    def __init__(
        self, store: BlobStore, registry: Registry, limit: int, checks: list[str], policy=None
    ):
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
            manifest = bundle.validate(upload.temp, expected_name=name)
            if self.policy is not None:
                self.policy.validate_overrides(manifest.get("gate"))
            self.store.commit(upload.temp, digest)
            return digest, manifest
        finally:
            upload.abort()

    def create_version(self, name, digest, size, manifest, actor, verdict_fn=None, forward_fn=None):
        """Only called once the blob is durable. One transaction: version, lineage, audit."""
        return self.registry.create_version(
            name, digest, size, manifest, actor, self.checks, verdict_fn, forward_fn
        )

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
