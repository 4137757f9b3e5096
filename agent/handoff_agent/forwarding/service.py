"""The forwarding service of a local agent: which destinations a verdict goes to, what a
destination gets (a ``DestinationContext``, never the agent), the pickle → skops conversion,
and central's stages mirrored back onto the versions it received. It owns the forwarder loop.
"""

from __future__ import annotations

import json
import logging
from typing import BinaryIO, Protocol

from ..plugins import Delivery, DestinationContext, ForwardError, NotReady, StageSource
from ..pools import Calls, Publisher
from ..sandbox import Limits, SandboxRefused
from ..store.blobs import BlobError, BlobUnavailable, BlobWriter
from ..vocabulary import TERMINAL
from .loop import Forwarder, corrupt_message
from .loop import Store as LoopStore

log = logging.getLogger("handoff_agent")


class Store(LoopStore, Protocol):
    def report_digest(self, model, number, kind): ...
    def outbox_acknowledged(self, destination): ...
    def audit_rows_since(self, seq): ...
    def awaiting_stage(self, terminal, destination): ...
    def mirror_stages(self, version_id, subject, remote, by): ...


class Blobs(Protocol):
    def put(self, source, expected=None) -> str: ...
    def put_bytes(self, data: bytes) -> str: ...
    def local_copy(self, digest: str) -> BinaryIO: ...
    def writer(self) -> BlobWriter: ...


class Sandbox(Protocol):
    async def run_once(self, module, limits, job, files, timeout, **kwargs): ...


class ForwardService:
    """``forward_on``: the verdicts that hand a version off (empty at central, which
    forwards nothing); ``limits``: a worker's limits for a whole bundle (conversion)."""

    def __init__(
        self,
        store: Store,
        blobs: Blobs,
        pools: Calls,
        events: Publisher,
        destinations: dict,
        agent_id: str,
        forward_on: list[str],
        sandbox: Sandbox,
        limits: Limits,
        timeout: float,
        backoff: float = 1.0,
        backoff_cap: float = 300.0,
    ):
        self.store, self.blobs, self.pools, self.events = store, blobs, pools, events
        self.destinations, self.agent_id = destinations, agent_id
        self.forward_on = list(forward_on)
        self.sandbox, self.limits, self.timeout = sandbox, limits, timeout
        self.url = ""  # this agent's base URL, once it listens
        self.forwarder = Forwarder(
            store, blobs, pools, events, agent_id, destinations, self.context,
            self.sync_stages, backoff, backoff_cap, 1.0,
        )  # fmt: skip

    def start(self) -> None:
        self.forwarder.start()

    async def stop(self) -> None:
        await self.forwarder.stop()

    def wake(self) -> None:
        """Look at the outbox now (a verdict or a forced forward queued a row)."""
        self.forwarder.wake.set()

    def problems(self) -> list[str]:
        """What stops a destination's stages coming back (a token it refuses), for people."""
        found = (getattr(d, "token_refused", None) for d in self.destinations.values())
        return [why for why in found if why]

    def forward_for(self, verdict: dict) -> list[str]:
        """The destinations a verdict hands the version to (``VersionService``'s rule)."""
        if verdict["verdict"] not in self.forward_on:
            return []
        return list(self.destinations)

    def context(self, delivery: Delivery) -> DestinationContext:
        """What a destination may use (plugins.DestinationContext): a few services of this
        agent, never the agent itself."""

        async def verified_blob(digest: str) -> BinaryIO:
            try:
                return await self.pools.run_io(self.blobs.local_copy, digest)
            except BlobUnavailable as e:
                raise NotReady(str(e)) from None
            except (BlobError, OSError):
                row = {"model": delivery.model, "number": delivery.number}
                raise ForwardError(corrupt_message(row, digest)) from None

        async def report_digest(model: str, number: int, kind: str) -> str | None:
            return await self.pools.call(self.store.report_digest, model, number, kind)

        async def audit_since_ack(destination: str) -> list[dict]:
            store = self.store
            ack = await self.pools.call(store.outbox_acknowledged, destination)
            return await self.pools.call(store.audit_rows_since, ack["seq"] if ack else None)

        return DestinationContext(
            agent_id=self.agent_id,
            url=self.url,
            verified_blob=verified_blob,
            report_digest=report_digest,
            convert_to_skops=self.convert_to_skops,
            audit_since_ack=audit_since_ack,
            blob_writer=self.blobs.writer,
            run_io=self.pools.run_io,
            local_copy=self.blobs.local_copy,
            sandbox=self.sandbox,
            limits=self.limits,
        )

    async def convert_to_skops(self, digest: str) -> str:
        """Pickle → skops in a sandboxed worker (converting unpickles). Returns the new blob's
        digest. The worker gets the bundle (a verified local copy) and a blob writer as open
        files, nothing else."""
        out = self.blobs.writer()
        try:
            with await self.pools.run_io(self.blobs.local_copy, digest) as bundle:
                run = await self.sandbox.run_once(
                    "handoff_agent.convert",
                    self.limits,
                    {"bundle": "", "out": "", "digest": digest},
                    {"bundle": bundle, "out": out},
                    self.timeout,
                )
            return await self._converted(digest, run, out)
        finally:
            out.abort()

    async def _converted(self, digest: str, run, out) -> str:
        """The converted bundle as a blob, or ForwardError saying why there is none."""
        result, stderr = run.result, run.stderr
        if isinstance(run.error, SandboxRefused):
            error = str(run.error)
        elif isinstance(run.error, TimeoutError):
            error = f"the conversion took longer than {self.timeout:.0f} s"
        elif run.error is not None:
            error = f"the conversion worker failed: {run.error}"
        else:
            error = "the conversion worker exited without a result"
        if not result or not result.get("ok"):
            why = (result or {}).get("error") or error
            if not result and stderr.strip():
                why += f" ({stderr.strip().splitlines()[-1][:300]})"
            raise ForwardError(
                f"Cannot convert the model to skops for central: {why}. "
                "Use a model skops can represent; central never loads pickles."
            )
        if result.get("untrusted_types"):
            log.info(
                "converted %s to skops; beyond the default trust list it needs: %s",
                digest[:12],
                ", ".join(result["untrusted_types"]),
            )
        await self.pools.run_io(out.rehash)  # written by the worker, not through the writer
        return await self.pools.run_io(out.commit)

    async def sync_stages(self, source: StageSource) -> None:
        """Mirror a destination's stages and sign-offs onto the local versions it received."""
        rows = await self.pools.call(self.store.awaiting_stage, tuple(TERMINAL), source.name)
        for row in rows:
            remote = await self.pools.run_io(source.status, json.loads(row["remote"]))
            if remote is None and getattr(source, "token_refused", None):
                return  # every other version would be refused too: the round ends here
            if remote is None or remote.get("stage") == row["stage"]:
                continue
            subject = f"{row['model']}:{row['number']}"
            await self.pools.call(
                self.store.mirror_stages, row["version_id"], subject, remote, source.name
            )
            self.events.publish(
                "stage",
                model=row["model"],
                version=row["number"],
                stage=remote.get("stage"),
                by=source.name,
                needs_trust=remote.get("needs_trust"),
            )
