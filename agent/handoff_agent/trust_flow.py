"""The trust list in the running agent: which types it loads, and versions held for trust.

A mixin of ``HandoffAgent``. At central a delivery's types are read from its skops schema
in a worker before anything is scheduled; a version that needs types outside the list waits
in ``needs_trust`` until an admin trusts them (HTTP, or the CLI, which central notices by
polling the trust table), then its checks are queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from . import trust, trust_admin
from .errors import HandoffError
from .sandbox import SandboxRefused

log = logging.getLogger("handoff_agent")


def waiting_text(types: list[str]) -> str:
    return f"waiting for an admin to trust: {', '.join(types)}"


class TrustMixin:
    trusted_types: list[str] = []

    def load_trusted(self) -> list[str]:
        """Default, the policy's and the added types (gadgets never, whatever the table says)."""
        policy = list(self.policy.trusted_types) if self.policy else []
        return trust.effective([*policy, *self.registry.trust_names()])

    async def probe_types(self, digest: str) -> dict:
        """The types a bundle's model names, read in a worker; no model code runs."""
        with await self.run_io(self.store.local_copy, digest) as bundle:
            run = await self.probe_pool.run({"bundle": ""}, {"bundle": bundle})  # warm workers
        if isinstance(run.error, SandboxRefused):
            # No model code may run here, so none will: the checks end with the same refusal,
            # and every load still goes through the trust list.
            log.warning("trust probe of %s not run: %s", digest[:12], run.error)
            return {"ok": True, "types": [], "unprobed": str(run.error)}
        if run.error is not None:
            log.warning("trust probe of %s failed: %s", digest[:12], run.error)
        result = run.result
        if not isinstance(result, dict) or "ok" not in result:
            raise HandoffError(
                "Central could not read which types the model needs: its probe worker failed.",
                "The local agent retries the delivery; see central's log if it keeps failing.",
                status=503,
                code="probe_failed",
            )
        return result

    def record_delivery(self, delivery_id, digest, size, env, checks, probe) -> tuple[dict, bool]:
        """Intake's record, plus the trust decision in the same transaction: a version whose
        types are not all trusted gets no checks and waits in needs_trust; one with no checks
        to run takes its verdict's stage at once."""
        store = self.registry
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
                    local = (env["local"].get("verdict") or {}).get("verdict") or "pass"
                    stage = "validated" if local in ("pass", "warn") else "rejected"
                    self.stages.enter(vid, stage, "central", subject, f"central checks: {local}")
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
        self.trusted_types = await self.call(self.load_trusted)
        if self.role != "central":
            return []
        released = await self.call(self._release_waiting)
        for r in released:
            self.events.publish(
                "stage", model=r["model"], version=r["number"], stage="received", by="central"
            )
            if not r["checks"]:
                await self.on_central_verdict(r["model"], r["number"], r["local_verdict"] or "pass")
        if any(r["checks"] for r in released):
            await self.schedule_queued()
        return [{"name": r["model"], "version": r["number"]} for r in released]

    def _release_waiting(self) -> list[dict]:
        store = self.registry
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
                sig = await self.call(self.registry.trust_signature)
                if sig != seen:
                    seen = sig
                    await self.trust_changed()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed poll must not stop the next one
                log.exception("re-reading the trust list failed")
            await asyncio.sleep(interval)

    def start_trust_watch(self, interval: float) -> None:
        self._trust_watch = asyncio.ensure_future(self.watch_trust(interval))

    async def stop_trust_watch(self) -> None:
        task = getattr(self, "_trust_watch", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
