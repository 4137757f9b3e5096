"""Blobs in an S3-compatible bucket (boto3): key ``prefix/ab/cdef…``, the same names as on disk.

A blob is spooled and hashed locally first, so its digest is known before a byte leaves the
machine; it is then uploaded straight to its content key with a SHA-256 checksum the server
checks (per part above the multipart threshold). S3 shows an object only once its upload is
complete, so a key never holds a partial blob. Reads are verified against the key's digest.

Credentials come only from boto3's standard chain (environment, shared credentials and config
files, profiles, instance roles). Keys found in the environment are taken out of it for good
(``secrets_env``), as the agent's token is, and are never logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ..redaction import redact_urls
from ..secrets_env import secret_from_environ
from .blobs import (
    CHUNK,
    DIGEST_RE,
    BlobInfo,
    BlobMissing,
    BlobUnavailable,
    BlobWriter,
    PartialUpload,
    VerifyingReader,
    check_digest,
    corrupt,
    free_space,
    intact,
    put_stream,
    spool_partials,
)

log = logging.getLogger("handoff_agent")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
MIN_PART = 5 << 20  # S3's smallest part but the last
MISSING = {"404", "NoSuchKey", "NotFound"}
CREDENTIALS_HINT = (
    "Give credentials through the standard AWS chain: AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, a profile in ~/.aws/credentials (AWS_PROFILE), or an instance role."
)


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at its ends)."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"blob_url {url!r}: {bucket!r} is not a valid S3 bucket name")
    if prefix and (not PREFIX_RE.fullmatch(prefix) or ".." in prefix.split("/")):
        raise ValueError(
            f"blob_url {url!r}: the prefix may hold letters, digits, '.', '_', '-' and '/'"
        )
    return bucket, prefix


def _session() -> boto3.session.Session:
    """boto3's standard chain; keys in the environment leave it once read."""
    secret = secret_from_environ("AWS_SECRET_ACCESS_KEY")
    if secret is None:
        return boto3.session.Session()
    return boto3.session.Session(
        aws_access_key_id=os.environ.pop("AWS_ACCESS_KEY_ID", None),
        aws_secret_access_key=secret,
        aws_session_token=secret_from_environ("AWS_SESSION_TOKEN"),
    )


class S3BlobStore:
    def __init__(
        self, client, bucket: str, prefix: str, tmp: Path, multipart_threshold: int = 8 << 20
    ):
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        part = max(MIN_PART, multipart_threshold)
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=part
        )

    @classmethod
    def from_url(
        cls, url: str, tmp: Path, endpoint_url: str = "", multipart_threshold: int = 8 << 20
    ) -> S3BlobStore:
        bucket, prefix = parse_url(url)
        session = _session()
        config = Config(
            # S3-compatible servers on their own host name serve buckets as paths.
            s3={"addressing_style": "path"} if endpoint_url else {},
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=10,
            read_timeout=120,
        )
        client = session.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=session.region_name or "us-east-1",
            config=config,
        )
        store = cls(client, bucket, prefix, tmp, multipart_threshold)
        store.check_reachable(endpoint_url)
        return store

    def check_reachable(self, endpoint_url: str = "") -> None:
        """At start: the bucket exists and the credentials open it, or a clear error."""
        where = f"{self.url} at {redact_urls(endpoint_url) or 'AWS'}"  # never its password
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise ValueError(f"No S3 credentials for {where}. {CREDENTIALS_HINT}") from None
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in MISSING or code == "NoSuchBucket":
                raise ValueError(
                    f"The bucket of {where} does not exist. Create it, or fix "
                    "c.HandoffAgent.blob_url."
                ) from None
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if status >= 500 or code.startswith("5"):  # the server failing, not refusing us
                raise ValueError(
                    f"S3 is failing ({code or status}) for {where}; nothing was changed: start "
                    "again once it answers."
                ) from None
            raise ValueError(f"S3 refused access to {where} ({code}). {CREDENTIALS_HINT}") from None
        except BotoCoreError as e:
            raise ValueError(
                f"Cannot reach S3 for {where}: {redact_urls(str(e))}. Check "
                "c.HandoffAgent.s3_endpoint_url "
                "(or AWS_ENDPOINT_URL)."
            ) from None

    def _key(self, digest: str) -> str:
        check_digest(digest)
        name = f"{digest[:2]}/{digest[2:]}"
        return f"{self.prefix}/{name}" if self.prefix else name

    @contextlib.contextmanager
    def _errors(self, digest: str = ""):
        """botocore's errors as the store's: missing, or unavailable (retry later)."""
        try:
            yield
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in MISSING:
                raise BlobMissing(f"no blob {digest} in {self.url}") from None
            raise BlobUnavailable(f"S3 refused a request on {self.url}: {code}") from None
        except BotoCoreError as e:
            said = redact_urls(str(e))
            raise BlobUnavailable(f"S3 is unavailable for {self.url}: {said}") from None

    def _publish(self, spool: Path, digest: str, size: int) -> None:
        if self.exists(digest) and intact(self, digest) and self._refresh(digest):
            return  # written once: the same digest is the same bytes (else: replaced)
        with self._errors(digest):
            self.client.upload_file(
                str(spool),
                self.bucket,
                self._key(digest),
                ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": digest}},
                Config=self.transfer,
            )
        if self.size(digest) != size:  # the upload completed, as the bytes we hashed
            raise corrupt(digest)

    def _refresh(self, digest: str) -> bool:
        """The object copied onto itself (server-side): bytes published again are young
        again, as ``LastModified`` says, which an orphan sweep judges by, while their writer
        records its reference. False when they are gone (swept meanwhile): the writer then
        uploads them anew. A server that refuses the copy leaves them as they are, said in
        the log: the push goes on, and only a sweep between this publish and the push's
        row, of bytes unreferenced for the whole grace period, could take them under it."""
        key = self._key(digest)
        try:
            with self._errors(digest):
                self.client.copy(
                    {"Bucket": self.bucket, "Key": key},
                    self.bucket,
                    key,
                    ExtraArgs={"MetadataDirective": "REPLACE", "Metadata": {"sha256": digest}},
                    Config=self.transfer,
                )
        except BlobMissing:
            return False
        except BlobUnavailable as e:
            log.warning("blob %s kept its age (%s): an orphan sweep judges it by that", digest, e)
        return True

    def writer(self) -> BlobWriter:
        return BlobWriter(self.tmp, self._publish)

    def free_bytes(self) -> int:
        return free_space(self.tmp)

    def put(self, source: BinaryIO | Iterable[bytes], expected: str | None = None) -> str:
        return put_stream(self, source, expected)

    def put_bytes(self, data: bytes) -> str:
        return put_stream(self, [data])

    def exists(self, digest: str) -> bool:
        try:
            self.size(digest)
        except BlobMissing:
            return False
        return True

    def size(self, digest: str) -> int:
        with self._errors(digest):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(digest))
        return int(head["ContentLength"])

    def open(self, digest: str) -> VerifyingReader:
        with self._errors(digest):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(digest))["Body"]
        return VerifyingReader(body, digest)

    def read_bytes(self, digest: str) -> bytes:
        with self.open(digest) as f, self._errors(digest):
            return f.read()

    def verify(self, digest: str) -> None:
        with self.open(digest) as f, self._errors(digest):
            while f.read(CHUNK):
                pass

    def local_copy(self, digest: str) -> BinaryIO:
        # An anonymous temporary file: nothing to remove, even after a crash.
        copy = tempfile.TemporaryFile(dir=self.tmp, prefix="copy-")  # noqa: SIM115
        try:
            with self.open(digest) as f, self._errors(digest):
                while chunk := f.read(CHUNK):
                    copy.write(chunk)
            copy.flush()
            copy.seek(0)
        except BaseException:
            copy.close()
            raise
        return copy

    def iter_digests(self) -> Iterator[str]:
        start = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=start
        )
        with self._errors():
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(start) :].replace("/", "", 1)
                    if obj["Key"][len(start) + 2 : len(start) + 3] == "/" and DIGEST_RE.fullmatch(
                        name
                    ):
                        yield name

    def delete(self, digest: str) -> None:
        with self._errors(digest):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(digest))

    def stat(self, digest: str) -> BlobInfo | None:
        try:
            with self._errors(digest):
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(digest))
        except BlobMissing:
            return None
        return BlobInfo(int(head["ContentLength"]), head["LastModified"].timestamp())

    def sweep(self, digest: str, cutoff: float, referenced) -> int | None:
        """S3 has no rename to set the blob aside while it is judged: a writer that publishes
        these same bytes (``_refresh``) and records its reference, both between the last
        check here and the delete (one round trip), for bytes nobody referenced through the
        whole grace period, would be left with a missing blob, which fsck names."""
        info = self.stat(digest)
        if info is None or info.modified >= cutoff or referenced(digest):
            return None
        self.delete(digest)
        return info.size

    def partial_uploads(self) -> list[PartialUpload]:
        start = f"{self.prefix}/" if self.prefix else ""
        with self._errors():
            found = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=start)
        multipart = [
            PartialUpload(f"s3 multipart {u['Key']}", u["Initiated"].timestamp())
            for u in found.get("Uploads", [])
        ]
        return spool_partials(self.tmp) + sorted(multipart)

    def restore_aside(self) -> int:
        return 0  # a sweep on S3 sets nothing aside (``sweep``)

    def clean_temp(self) -> int:
        n = 0
        for f in self.tmp.glob("*.part"):
            f.unlink(missing_ok=True)
            n += 1
        return n
