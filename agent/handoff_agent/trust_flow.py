"""The trust list in the running agent, and central's flow from a delivery to its stage.

Which types the agent loads (default, policy, added). At central a delivery's types are read
from its skops schema in a worker before anything is scheduled; a version that needs types
outside the list waits in ``needs_trust`` until an admin trusts them (HTTP, or the CLI, which
central notices by polling the trust table), then its checks are queued. A version's verdict
at central becomes its stage (validated or rejected).

A service the agent builds; it gets only what it uses, typed below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import BinaryIO, Protocol

from . import trust, trust_admin
from .errors import Conflict, Unavailable
from .intake import IntakeManager
from .outage import failed_round
from .policy import Policy
from .pools import Calls, Publisher
from .sandbox import SandboxRefused

log = logging.getLogger("handoff_agent")


def waiting_text(types: list[str]) -> str:
    return f"waiting for an admin to trust: {', '.join(types)}"


class Store(Protocol):
    def transaction(self): ...
    def version_id(self, name, number): ...
    def set_version(self, version_id, **values): ...
    def queue_checks(self, version_id, checks): ...
    def trust_names(self): ...
    def trust_signature(self): ...
    def trust_waiting(self): ...
    def trust_hold(self, version_id, types, local_verdict): ...
    def trust_release(self, version_id): ...
    def who_trusted(self, types): ...


class Blobs(Protocol):
    def local_copy(self, digest: str) -> BinaryIO: ...


class Stages(Protocol):
    def enter(self, version_id, stage, by, subject, comment=""): ...


class Probes(Protocol):
    """Warm sandboxed workers that read a bundle's skops schema (``probes.ProbePool``)."""

    async def run(self, job: dict, files: dict): ...


class TrustFlow:
    """``policy``, ``stages`` and ``intake`` are central's (None on a local agent);
    ``schedule`` starts queued checks (``CheckFlow.schedule_queued``)."""

    def __init__(
        self,
        store: Store,
        blobs: Blobs,
        pools: Calls,
        events: Publisher,
        probes: Probes,
        checks: list[str],
        schedule: Callable[[], Awaitable[None]],
        policy: Policy | None = None,
        stages: Stages | None = None,
        intake: IntakeManager | None = None,
    ):
        self.store, self.blobs, self.pools, self.events = store, blobs, pools, events
        self.probes = probes
        self.checks, self.schedule = list(checks), schedule
        self.policy, self.stages, self.intake = policy, stages, intake
        self.central = policy is not None
        self.trusted_types = self.load_trusted()
        self._watch: asyncio.Task | None = None

    def load_trusted(self) -> list[str]:
        """Default, the policy's and the added types (gadgets never, whatever the table says)."""
        policy = list(self.policy.trusted_types) if self.policy else []
        return trust.effective([*policy, *self.store.trust_names()])

    async def probe_types(self, digest: str) -> dict:
        """The types a bundle's model names, read in a worker; no model code runs."""
        with await self.pools.run_io(self.blobs.local_copy, digest) as bundle:
            run = await self.probes.run({"bundle": ""}, {"bundle": bundle})  # warm workers
        if isinstance(run.error, SandboxRefused):
            # No model code may run here, so none will: the checks end with the same refusal,
            # and every load still goes through the trust list.
            log.warning("trust probe of %s not run: %s", digest[:12], run.error)
            return {"ok": True, "types": [], "unprobed": str(run.error)}
        if run.error is not None:
            log.warning("trust probe of %s failed: %s", digest[:12], run.error)
        result = run.result
        if not isinstance(result, dict) or "ok" not in result:
            raise Unavailable(
                "Central could not read which types the model needs: its probe worker failed.",
                "The local agent retries the delivery; see central's log if it keeps failing.",
                code="probe_failed",
            )
        return result

    def record_delivery(self, delivery_id, digest, size, env, checks, probe) -> tuple[dict, bool]:
        """Intake's record, plus the trust decision in the same transaction: a version whose
        types are not all trusted gets no checks and waits in needs_trust; one with no checks
        to run takes its verdict's stage at once."""
        store = self.store
        with store.transaction():
            missing = trust.untrusted(probe["types"], self.trusted_types) if probe["ok"] else []
            held = not probe["ok"] or bool(missing)
            out, created = self.intake.record(
                delivery_id, digest, size, env, [] if held else checks
            )
            vid = out.pop("version_id", None)
            if not created:
                return out, created
            subject = f"{out['name']}:{out['version']}"
            if not held:
                if not checks:  # nothing runs here: conclude now, or a crash leaves it received
                    # the sender's verdict decides (revalidate = false); none is no pass
                    local = (env["local"].get("verdict") or {}).get("verdict")
                    stage = "validated" if local in ("pass", "warn") else "rejected"
                    said = f"central checks: {local}" if local else "the delivery had no verdict"
                    self.stages.enter(vid, stage, "central", subject, said)
                    out["stage"] = stage
                return out, created
            if missing:
                local = (env["local"].get("verdict") or {}).get("verdict")
                store.trust_hold(vid, missing, local)
                self.stages.enter(vid, "needs_trust", "central", subject, waiting_text(missing))
                out.update(stage="needs_trust", needs_trust=missing)
            else:
                reason = f"The model cannot be read as skops ({probe.get('error')})."
                self.stages.enter(vid, "rejected", "central", subject, reason)
                out["stage"] = "rejected"
            return out, created

    async def trust_changed(self) -> list[dict]:
        """Re-read the list; at central, let every version whose types are now trusted go on."""
        self.trusted_types = await self.pools.call(self.load_trusted)
        if not self.central:
            return []
        released = await self.pools.call(self._release_waiting)
        for r in released:
            self.events.publish(
                "stage", model=r["model"], version=r["number"], stage="received", by="central"
            )
            if not r["checks"]:
                await self.on_verdict(r["model"], r["number"], r["local_verdict"] or "pass")
        if any(r["checks"] for r in released):
            await self.schedule()
        return [{"name": r["model"], "version": r["number"]} for r in released]

    def _release_waiting(self) -> list[dict]:
        store = self.store
        checks = list(self.checks) if self.policy.revalidate else []
        out = []
        for row in trust_admin.releasable(store, self.trusted_types):
            vid, subject = row["version_id"], f"{row['model']}:{row['number']}"
            with store.transaction():
                if not store.trust_release(vid):  # another replica released it first
                    continue
                store.queue_checks(vid, checks)
                if checks:
                    store.set_version(vid, status="checking")
                by = ", ".join(store.who_trusted(row["types"])) or "the policy"
                note = "central checks queued" if checks else "no central checks"
                comment = f"trusted by {by}: {', '.join(row['types'])}; {note}"
                self.stages.enter(vid, "received", "central", subject, comment)
            out.append({**row, "checks": bool(checks)})
        return out

    async def watch_trust(self, interval: float) -> None:
        """Notice trust changes made outside this process (``jupyter handoff trust add``)."""
        seen = None
        while True:
            try:
                sig = await self.pools.call(self.store.trust_signature)
                if sig != seen:
                    seen = sig
                    await self.trust_changed()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed poll must not stop the next one
                failed_round(log, "re-reading the trust list failed")
            await asyncio.sleep(interval)

    def start_watch(self, interval: float) -> None:
        self._watch = asyncio.ensure_future(self.watch_trust(interval))

    async def stop_watch(self) -> None:
        task, self._watch = self._watch, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- central: from a delivery to its stage ---------------------------------------------

    async def receive(self, delivery_id: str, digest: str, size: int, env: dict):
        """A verified delivery whose bundle is stored: its version, trust decision and stage."""
        checks = list(self.checks) if self.policy.revalidate else []
        probe = await self.probe_types(digest)  # before anything loads it
        out, created = await self.pools.commit(  # acknowledged only once committed
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
                await self.schedule()
        return out, created

    async def on_verdict(self, model: str, number: int, verdict: str) -> None:
        """Central's checks concluded: the version is validated or rejected."""
        stage = "validated" if verdict in ("pass", "warn") else "rejected"
        vid = await self.pools.call(self.store.version_id, model, number)
        try:
            await self.pools.call(
                self.stages.enter,
                vid,
                stage,
                "central",
                f"{model}:{number}",
                f"central checks: {verdict}",
                "received",
            )
        except Conflict:  # concluded already (by another replica, or before a restart)
            return
        self.events.publish("stage", model=model, version=number, stage=stage, by="central")
