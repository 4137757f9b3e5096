"""Ingest: a streamed upload becomes a durable blob, then a version. No HTTP in here."""

from __future__ import annotations

import mmap
import queue
import threading
import time

from . import bundle
from .disk_room import DiskRoom
from .errors import BadRequest, InvalidBundle, TooLarge
from .names import validate_name
from .store.blobs import DIGEST_RE, BlobStore, SpoolRefused


class ReceiveBuffer:
    """A page-aligned buffer an upload's body is read into (``Upload.buffer``), back in the
    upload's pool once every thread it was handed to is done with it. Page-aligned, so the
    blob writer sends it to the disk as it is, with no copy into its own aligned stage."""

    SIZE = 1 << 20

    def __init__(self, free: queue.SimpleQueue):
        self.view = memoryview(mmap.mmap(-1, self.SIZE))  # mmap memory is page-aligned
        self._free, self._users, self._lock = free, 0, threading.Lock()

    def hand_to(self, users: int) -> None:
        """Its bytes go to ``users`` threads, each of which calls ``release`` once."""
        self._users = users
        if not users:
            self._free.put(self)

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = not self._users
        if last:
            self._free.put(self)


class ChunkThread:
    """``fn`` called on each chunk fed, in order, on a thread of its own: the receiving thread
    only hands chunks on, while the hashing and writing run on the other core (hashlib and
    os.write release the GIL). The queue is bounded, so a slow consumer slows the upload
    instead of holding the body in memory. The first error stops the calls and is kept.
    A chunk in a ``ReceiveBuffer`` is released once handled (or skipped)."""

    DEPTH = 8  # chunks of at most 1 MiB (the server's chunk size)

    def __init__(self, fn, name: str):
        self.fn, self.error, self.closed = fn, None, False
        self._queue: queue.Queue = queue.Queue(self.DEPTH)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            chunk, buffer = item
            if self.error is None:
                try:
                    self.fn(chunk)
                except BaseException as e:  # kept for close(); the rest is drained
                    self.error = e
            if buffer is not None:
                buffer.release()

    def feed(self, chunk, buffer: ReceiveBuffer | None = None) -> None:
        if not self.closed:  # nothing reads the queue once closed
            self._queue.put((chunk, buffer))
        elif buffer is not None:
            buffer.release()

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

    # Each thread holds at most DEPTH chunks queued and one in hand; one more is being read.
    BUFFERS = ChunkThread.DEPTH + 2

    def __init__(self, store: BlobStore, limit: int, expected_name: str | None = None, blob=None):
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._buffers = 0
        writes = blob is None  # else an adopted spool file: already written, only hashed
        if writes:
            blob = store.writer()
        # Hashing and writing on threads of their own: on two cores, one thread doing both
        # was the upload's bottleneck (1 GiB: 1.8 s -> 1.6 s), and an adopted file's read
        # waited for its hash (1,186 -> 1,319 MB/s).
        self.writing = [ChunkThread(blob.hash, "blob-hash")]
        if writes:
            self.writing.append(ChunkThread(blob.append, "blob-write"))
        self.blob = blob
        self.size = 0
        self.limit = limit
        self.overflow = False
        self.stream = StreamValidation(expected_name) if expected_name else None
        self._consumers = [*self.writing, *([self.stream] if self.stream else [])]

    def buffer(self) -> ReceiveBuffer:
        """A free buffer to read the next bytes into and hand to ``write``. When all are
        handed on, it waits for one, as a full queue makes ``write`` wait."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._buffers < self.BUFFERS:
                self._buffers += 1
                return ReceiveBuffer(self._free)
            return self._free.get()

    def write(self, chunk, buffer: ReceiveBuffer | None = None) -> None:
        """The next bytes of the body; ``buffer``, when they are in one of ``buffer()``'s."""
        if not self.overflow:
            self.size += len(chunk)
            if self.size > self.limit:
                # Keep reading so the client gets an answer, but stop storing.
                self.overflow = True
                self.abort()
        threads = [] if self.overflow else self._consumers
        if buffer is not None:
            buffer.hand_to(len(threads))
        for thread in threads:
            thread.feed(chunk, buffer)

    def absorb(self, more=None) -> None:
        """Read an adopted spool file once, handing each chunk to the hash and the stream
        validation as an upload's body is (``write``)."""
        self.blob.absorb(self.write, self.limit, more)
        self.size = self.blob.size

    def verify_followed(self, follow: Follow) -> None:
        """A followed entry comes with no whole-bundle digest (the kernel skips that pass:
        three passes over a push's bytes instead of four). Its bytes are pinned instead: the size
        and manifest digest the kernel declared, and the layout ``assemble`` writes; the
        member digests are checked against the manifest next, as for any upload."""
        self.stream.close()
        if (
            self.size != follow.size
            or self.stream.error is not None
            or not self.stream.check.laid_out(follow.manifest)
        ):
            raise InvalidBundle(
                f"The spool entry is not the bundle the kernel wrote ({self.size} bytes read, "
                f"{follow.size} declared, or not laid out as written).",
                "Push again; the kernel writes a fresh entry.",
                code="digest_mismatch",
            )

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


class Follow:
    """A spool entry a local kernel is still writing while the agent reads it: the pipelined
    push. The request's headers name the entry; the kernel writes the bundle, then sends its
    size and manifest digest as the body (``declare``). Reading stops at the declared end. A
    request that ends first (the kernel went away) or an entry that stops growing for
    ``stall`` seconds is refused, so no reader waits forever."""

    FIRST_PAUSE, LONGEST_PAUSE = 0.0002, 0.005  # seconds between looks at a growing file

    def __init__(self, entry: str, stall: float):
        self.entry, self.stall = entry, stall
        self.size: int | None = None
        self.manifest: str | None = None
        self.cancelled = False
        self._news = threading.Event()  # declared or cancelled: wakes a waiting reader
        self._seen, self._since, self._pause = 0, time.monotonic(), self.FIRST_PAUSE
        self._last_look = False

    def declare(self, body: dict) -> None:
        """The kernel's last word: ``{"spool": entry, "size": n, "manifest": "sha256:..."}``."""
        size, digest = body.get("size"), body.get("manifest")
        digest = digest.removeprefix("sha256:") if isinstance(digest, str) else ""
        if (
            body.get("spool") != self.entry
            or type(size) is not int
            or size < 0
            or not DIGEST_RE.fullmatch(digest)
        ):
            raise BadRequest(
                "A followed spool entry ends with a body naming the entry, its size and its "
                "manifest's sha256.",
                'e.g. {"spool": "<entry>", "size": 1024, "manifest": "sha256:<64 hex>"}',
            )
        self.size, self.manifest = size, digest
        self._news.set()

    def cancel(self) -> None:
        self.cancelled = True
        self._news.set()

    def more(self, read: int) -> bool:
        """At the end of what is written so far (``BlobWriter.absorb``): wait a moment and
        say read on, or say done once the kernel has declared the end."""
        if self.cancelled:
            raise SpoolRefused("the push ended before the kernel finished writing it")
        if self.size is not None:
            if read >= self.size or self._last_look:
                return False
            self._last_look = True  # written in full before the declaration: read the rest
            return True
        now = time.monotonic()
        if read > self._seen:
            self._seen, self._since, self._pause = read, now, self.FIRST_PAUSE
        elif now - self._since > self.stall:
            raise SpoolRefused(f"it stopped growing for {self.stall:g} s before it was done")
        self._news.wait(self._pause)
        self._pause = min(2 * self._pause, self.LONGEST_PAUSE)
        return True


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
    def __init__(
        self,
        store: BlobStore,
        registry,
        limit: int,
        policy=None,
        stall: float = 60.0,
        room: DiskRoom | None = None,
    ):
        self.policy = policy
        self.room = room  # a DiskRoom: a bundle the disk has no room for is refused first
        self.stall = stall
        self._following: set[Follow] = set()  # entries being read as kernels write them
        self.store = store
        self.registry = registry
        self.limit = limit

    def begin(self, name: str, declared_size: int | None) -> Upload:
        validate_name(name)
        if declared_size is not None and declared_size > self.limit:
            raise too_large(self.limit)
        if self.room is not None:
            self.room.check(declared_size)
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

    def _need_spool(self) -> None:
        if self.spool is None:
            raise BadRequest(
                "This agent's blob store has no spool.",
                "Send the bundle as the request body (application/x-tar).",
                code="no_spool",
            )

    def follow(self, name: str, entry: str) -> Follow:
        """Checked before the kernel is told to go on: then ``adopt`` reads the entry as it
        is written."""
        validate_name(name)
        self._need_spool()
        follow = Follow(entry, self.stall)
        self._following.add(follow)  # until adopt() is done with it
        return follow

    def cancel_follows(self) -> None:
        """The agent is stopping: every entry still being followed is refused and removed."""
        for follow in list(self._following):
            follow.cancel()

    def adopt(self, name: str, entry, expected: str | None, follow: Follow | None = None) -> Upload:
        """A bundle a local kernel wrote (or, with ``follow``, is writing) into the spool,
        taken over without a copy: read once to hash and validate it, as an upload is. Runs
        off the event loop; then ``store_blob``. A refused entry is removed and nothing is
        stored."""
        validate_name(name)
        self._need_spool()
        if expected is None and follow is None:
            raise BadRequest("A spool hand-over needs X-Handoff-Digest.", code="bad_digest_header")
        try:
            blob = self.store.adopt(entry)
        except SpoolRefused as e:
            self._following.discard(follow)
            raise spool_refused(e) from None
        upload = Upload(self.store, self.limit, expected_name=name, blob=blob)
        try:
            upload.absorb(None if follow is None else follow.more)
            if follow is not None:
                upload.verify_followed(follow)
        except SpoolRefused as e:
            upload.abort()
            raise spool_refused(e) from None
        except BaseException:
            upload.abort()
            raise
        finally:
            self._following.discard(follow)
        return upload

    def take_followed(self, name: str, entry: str, follow: Follow) -> tuple[str, dict, int]:
        """``adopt`` a followed entry and store it, on the thread that read it: the digest,
        the manifest and the size, with no hop back to the event loop in between."""
        upload = self.adopt(name, entry, None, follow)
        digest, manifest = self.store_blob(upload, name, None)
        return digest, manifest, upload.size

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
