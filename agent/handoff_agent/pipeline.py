"""The hand-off half of the agent: forwarding on a local agent, intake and stages at central.

A mixin of ``HandoffAgent`` so the agent module stays about serving; everything here is the
glue between the managers (outbox, intake, stages) and the event loop.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from importlib.metadata import entry_points
from pathlib import Path

from . import audit, outbox
from .forwarding.central import ForwardError, central_home, embedded_secret
from .forwarding.loop import Forwarder
from .intake import IntakeManager
from .policy import TERMINAL, Policy
from .sandbox import SandboxRefused
from .stages import StageManager

log = logging.getLogger("handoff_agent")
FORWARDERS = "handoff_agent.forwarders"


def load_forwarders() -> dict:
    """Destination classes by name. A broken plugin is a warning, never a crash."""
    found = {}
    for ep in entry_points(group=FORWARDERS):
        try:
            found[ep.name] = ep.load()
        except Exception as e:  # a third party's import error must not stop the agent
            log.warning("forwarder plugin %r (%s) failed to load: %s", ep.name, ep.value, e)
    return found


class PipelineMixin:
    def setup_pipeline(self) -> None:
        home = Path(self.home)
        id_file = home / "agent-id"
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex)
        self.agent_id = id_file.read_text().strip()
        self.policy = self.stages = self.intake = None
        if self.role == "central":
            self.policy = Policy.load(self.policy_file or self._embedded_policy(home))
            self.stages = StageManager(self.registry.db, self.policy)
            self.intake = IntakeManager(self, self.policy)
        found = load_forwarders()
        self.destinations = {}
        for name in self.forward_to:
            if name not in found:
                log.warning("no forwarder named %r; registered: %s", name, sorted(found))
                continue
            self.destinations[name] = found[name](parent=self)
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

    def forward_for(self, verdict: dict) -> list[str]:
        if self.role != "local" or verdict["verdict"] not in self.forward_on:
            return []
        return list(self.destinations)

    def force_forward(self, name: str, number: int, to: str, user: str) -> bool:
        vid = self.registry.version_id(name, number)
        with self.registry.db.atomic():
            return outbox.enqueue(self.registry.db, vid, to, forced_by=user)

    async def convert_to_skops(self, digest: str) -> str:
        """Pickle → skops in a sandboxed worker (converting unpickles). Returns the new blob's
        digest. The worker gets the bundle and the output as open files, nothing else."""
        fd, out = self.store.new_temp()
        os.close(fd)
        limits = self.worker_limits(
            file_size=max(self.sandbox_max_file_size, 2 * self.max_bundle_size)
        )
        run = await self.model_sandbox.run_once(
            "handoff_agent.convert",
            limits,
            {"bundle": "", "out": ""},
            {"bundle": (str(self.store.path(digest)), "r"), "out": (str(out), "w")},
            self.check_timeout,
        )
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
            Path(out).unlink(missing_ok=True)
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
        return await self.run_io(self.store.put_file, Path(out))

    async def sync_stages(self, central) -> None:
        """Mirror central's stage and sign-offs onto the local versions it received."""
        rows = await self.call(self._awaiting_stage)
        for row in rows:
            remote = await self.run_io(central.status, json.loads(row["remote"]))
            if remote is None or remote.get("stage") == row["stage"]:
                continue
            await self.call(self._mirror, row["version_id"], row["model"], row["number"], remote)
            self.events.publish(
                "stage",
                model=row["model"],
                version=row["number"],
                stage=remote.get("stage"),
                by="central",
                needs_trust=remote.get("needs_trust"),
            )

    def _awaiting_stage(self) -> list[dict]:
        done = ", ".join(f"'{s}'" for s in TERMINAL)
        return list(
            self.registry.db.query(
                "select o.version_id, o.remote, v.model, v.number, v.stage from outbox o"
                " join versions v on v.id = o.version_id where o.destination = 'central'"
                f" and o.state = 'delivered' and coalesce(v.stage, '') not in ({done})"
            )
        )

    def _mirror(self, version_id: int, model: str, number: int, remote: dict) -> None:
        db = self.registry.db
        with db.atomic():
            db.execute("delete from stages where version_id = ?", [version_id])
            db.execute("delete from signoffs where version_id = ?", [version_id])
            for s in remote.get("stages", []):
                db["stages"].insert({"version_id": version_id, **s})
            for s in remote.get("signoffs", []):
                db["signoffs"].insert({"version_id": version_id, **s})
            waits = remote.get("needs_trust")
            db.execute(
                "update versions set stage = ?, needs_trust = ? where id = ?",
                [remote.get("stage"), json.dumps(waits) if waits else None, version_id],
            )
            audit.append(
                db, "central", "stage.mirror", f"{model}:{number}", {"stage": remote.get("stage")}
            )

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
            if out["stage"] in ("needs_trust", "rejected"):
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
            else:
                local = (env["local"].get("verdict") or {}).get("verdict")
                await self.on_central_verdict(out["name"], out["version"], local or "pass")
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
