"""The hand-off half of the agent: forwarding on a local agent, intake and stages at central.

A mixin of ``HandoffAgent`` so the agent module stays about serving; everything here is the
glue between the managers (outbox, intake, stages) and the event loop.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import BinaryIO

from .forwarding.loop import Forwarder, corrupt_message
from .homes import central_home, embedded_secret
from .intake import IntakeManager
from .plugins import Delivery, DestinationContext, ForwardError, NotReady, StageSource
from .policy import TERMINAL, Policy
from .sandbox import SandboxRefused
from .stages import StageManager
from .store.blobs import BlobError, BlobUnavailable

log = logging.getLogger("handoff_agent")


class PipelineMixin:
    def setup_pipeline(self) -> None:
        home = Path(self.home)
        id_file = home / "agent-id"
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex)
        self.agent_id = id_file.read_text().strip()
        self.policy = self.stages = self.intake = self.deployments = None
        if self.role == "central":
            self.policy = Policy.load(self.policy_file or self._embedded_policy(home))
            from .serving.deploy import DeploymentService

            self.deployments = DeploymentService(self.registry, self.policy)
            self.stages = StageManager(self.registry, self.policy, self.deployments.on_stage)
            self.intake = IntakeManager(self, self.policy)
        found = self.plugin_registry.load_all("destination", list(self.forward_to))
        self.destinations = {}
        for name, cls in found.items():
            dest = self.destinations[name] = cls(parent=self)
            dest.name = name  # the name it is registered and configured under
        self.forwarder = Forwarder(
            self, self.destinations, self.forward_backoff, self.forward_backoff_cap, 1.0
        )

    def _embedded_policy(self, home: Path) -> Path:
        """The embedded central writes its policy once, where an operator can read and edit it."""
        path = home / "policy.toml"
        if not path.exists():
            same = home.resolve() == central_home().resolve()
            secret = embedded_secret(home if not same else None)
            path.write_text(
                "# Handoff central policy. Edit, then restart the central agent.\n"
                "[intake]\n"
                f"secrets = [{json.dumps(secret)}]\n"
                "# Types this central trusts beyond Handoff's default list (exact names).\n"
                "# `jupyter handoff trust add TYPE` adds more without a restart.\n"
                "trusted_types = []\n"
                "revalidate = true\n\n"
                "[sandbox]\n"
                "# true: never run model code without bubblewrap (apt-get install bubblewrap).\n"
                "# false here so the embedded central runs on any machine; it then falls back\n"
                "# to rlimits with a warning.\n"
                "require = false\n\n"
                "[stages.approved]\nreviewer = 1\n\n[stages.canary]\nreviewer = 1\n\n"
                "[stages.production]\nreviewer = 1\nadmin = 1\n"
            )
            path.chmod(0o600)
        return path

    # -- local: forwarding ----------------------------------------------------------------

    def destination_context(self, delivery: Delivery) -> DestinationContext:
        """What a destination's ``body`` may use (plugins.DestinationContext): a few
        services of this agent, never the agent itself."""

        async def verified_blob(digest: str) -> BinaryIO:
            try:
                return await self.run_io(self.store.local_copy, digest)
            except BlobUnavailable as e:
                raise NotReady(str(e)) from None
            except (BlobError, OSError):
                row = {"model": delivery.model, "number": delivery.number}
                raise ForwardError(corrupt_message(row, digest)) from None

        async def report_digest(model: str, number: int, kind: str) -> str | None:
            return await self.call(self.registry.report_digest, model, number, kind)

        async def audit_since_ack(destination: str) -> list[dict]:
            store = self.registry
            ack = await self.call(store.outbox_acknowledged, destination)
            return await self.call(store.audit_rows_since, ack["seq"] if ack else None)

        return DestinationContext(
            agent_id=self.agent_id,
            url=getattr(self, "url", ""),
            verified_blob=verified_blob,
            report_digest=report_digest,
            convert_to_skops=self.convert_to_skops,
            audit_since_ack=audit_since_ack,
            blob_writer=self.store.writer,
            run_io=self.run_io,
        )

    def forward_for(self, verdict: dict) -> list[str]:
        if self.role != "local" or verdict["verdict"] not in self.forward_on:
            return []
        return list(self.destinations)

    def force_forward(self, name: str, number: int, to: str, user: str) -> bool:
        vid = self.registry.version_id(name, number)
        return self.versions.force_forward(vid, to, user)

    async def convert_to_skops(self, digest: str) -> str:
        """Pickle → skops in a sandboxed worker (converting unpickles). Returns the new blob's
        digest. The worker gets the bundle (a verified local copy) and a blob writer as open
        files, nothing else."""
        limits = self.worker_limits(
            file_size=max(self.sandbox_max_file_size, 2 * self.max_bundle_size)
        )
        out = self.store.writer()
        try:
            with await self.run_io(self.store.local_copy, digest) as bundle:
                run = await self.model_sandbox.run_once(
                    "handoff_agent.convert",
                    limits,
                    {"bundle": "", "out": "", "digest": digest},
                    {"bundle": bundle, "out": out},
                    self.check_timeout,
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
            error = f"the conversion took longer than {self.check_timeout:.0f} s"
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
        await self.run_io(out.rehash)  # written by the worker, not through the writer
        return await self.run_io(out.commit)

    async def sync_stages(self, source: StageSource) -> None:
        """Mirror a destination's stages and sign-offs onto the local versions it received."""
        rows = await self.call(self._awaiting_stage, source.name)
        for row in rows:
            remote = await self.run_io(source.status, json.loads(row["remote"]))
            if remote is None or remote.get("stage") == row["stage"]:
                continue
            await self.call(
                self._mirror, row["version_id"], row["model"], row["number"], remote, source.name
            )
            self.events.publish(
                "stage",
                model=row["model"],
                version=row["number"],
                stage=remote.get("stage"),
                by=source.name,
                needs_trust=remote.get("needs_trust"),
            )

    def _awaiting_stage(self, destination: str) -> list[dict]:
        return self.registry.awaiting_stage(tuple(TERMINAL), destination)

    def _mirror(
        self, version_id: int, model: str, number: int, remote: dict, by: str = "central"
    ) -> None:
        self.registry.mirror_stages(version_id, f"{model}:{number}", remote, by)

    # -- central: intake and stages -------------------------------------------------------

    async def receive(self, delivery_id: str, digest: str, size: int, env: dict):
        checks = list(self.checks) if self.policy.revalidate else []
        probe = await self.probe_types(digest)  # before anything loads it (trust_flow)
        out, created = await self.call(
            self.record_delivery, delivery_id, digest, size, env, checks, probe
        )
        if created:
            self.events.publish(
                "stage", model=out["name"], version=out["version"], stage="received", by="central"
            )
            if out["stage"] != "received":  # held, refused, or concluded with no checks
                self.events.publish(
                    "stage",
                    model=out["name"],
                    version=out["version"],
                    stage=out["stage"],
                    by="central",
                    needs_trust=out.get("needs_trust"),
                )
            elif checks:
                await self.schedule_queued()
        return out, created

    async def on_central_verdict(self, model: str, number: int, verdict: str) -> None:
        stage = "validated" if verdict in ("pass", "warn") else "rejected"
        vid = await self.call(self.registry.version_id, model, number)
        await self.call(
            self.stages.enter,
            vid,
            stage,
            "central",
            f"{model}:{number}",
            f"central checks: {verdict}",
        )
        self.events.publish("stage", model=model, version=number, stage=stage, by="central")
