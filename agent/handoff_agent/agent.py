"""The agent service: configuration, the tornado app, and the managers it wires together."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from tornado import httpserver, web
from traitlets import Dict, Enum, Float, Integer, List, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from . import audit, reports
from .blobs import BlobStore
from .checks.registry import discover
from .events import EventBus
from .gate import GatePolicy
from .handlers.base import NotFoundHandler, log_request
from .handlers.events import EventsHandler
from .handlers.models import (
    ChampionHandler,
    HealthHandler,
    ModelsHandler,
    OpenAPIHandler,
    ReportHandler,
    VersionHandler,
    VersionsHandler,
)
from .handlers.pipeline import (
    BundleHandler,
    ForwardHandler,
    IntakeHandler,
    LineageHandler,
    OutboxHandler,
    SignoffHandler,
    TransitionHandler,
    WhoamiHandler,
)
from .handlers.trust import TrustHandler
from .ingest import IngestManager
from .pipeline import PipelineMixin
from .registry import Registry
from .runner import CheckRunner
from .sandbox import Limits, Sandbox
from .secrets_env import secret_from_environ
from .trust_flow import TrustMixin

log = logging.getLogger("handoff_agent")
# 128 bits: 22 url-safe base64 characters (6 bits each), or 32 hex digits and more.
MIN_TOKEN_CHARS = 22
TOKEN_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def default_home() -> Path:
    return Path(jupyter_data_dir()) / "handoff"


class HandoffAgent(PipelineMixin, TrustMixin, LoggingConfigurable):
    """The agent: receives pushes, stores them durably, runs checks, hands them off.
    In the central role it takes signed deliveries and walks versions through stages."""

    home = Unicode(
        help="Directory for the registry and blobs. Default: <jupyter data dir>/handoff"
    ).tag(config=True)
    ip = Unicode("127.0.0.1", help="Interface to bind. Loopback unless you know why not.").tag(
        config=True
    )
    port = Integer(0, help="Port to listen on. 0 picks a free port.").tag(config=True)
    token = Unicode(
        help="API token. Generated at random on each start unless set (or HANDOFF_TOKEN is). "
        f"At least {MIN_TOKEN_CHARS} characters (128 bits as url-safe base64), e.g. from "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
    ).tag(config=True)
    role = Unicode("local", help="'local' for an analyst's agent, 'central' for IT's intake.").tag(
        config=True
    )
    allowed_hosts = List(
        Unicode(), help="Host names accepted besides loopback (DNS-rebinding protection)."
    ).tag(config=True)
    allowed_origins = List(
        Unicode(), help="Browser origins allowed to call the API cross-origin."
    ).tag(config=True)
    max_bundle_size = Integer(
        4 << 30, help="Largest bundle accepted, in bytes. Larger uploads get 413."
    ).tag(config=True)
    checks = List(
        Unicode(),
        [
            "loads",
            "smoke",
            "schema",
            "performance",
            "latency",
            "fairness",
            "explainability",
            "drift",
        ],
        help="Checks run on every push, by registered name (entry point group "
        "handoff_agent.checks).",
    ).tag(config=True)
    extra_checks = Dict(
        help="Extra checks as name -> 'module:attr', for plugins not installed as entry points."
    ).tag(config=True)
    policy_file = Unicode(
        help="Central only: the policy TOML (sign-offs per stage, intake secrets, trusted "
        "types). Default: <home>/policy.toml, written on first start."
    ).tag(config=True)
    forward_to = List(
        Unicode(),
        help="Destinations (handoff_agent.forwarders) a version goes to on a passing verdict. "
        "Default: ['central'], the embedded central on this machine, for a local agent.",
    ).tag(config=True)
    forward_on = List(Unicode(), ["pass", "warn"], help="Verdicts that forward automatically.").tag(
        config=True
    )
    forward_backoff = Float(1.0, help="First retry delay of a failed delivery, in seconds.").tag(
        config=True
    )
    forward_backoff_cap = Float(300.0, help="Longest delay between delivery retries.").tag(
        config=True
    )
    check_timeout = Float(120.0, help="Seconds one check may run before it is stopped.").tag(
        config=True
    )
    check_memory_limit = Integer(
        8 << 30, help="Address-space limit (RLIMIT_AS) of a check worker, in bytes."
    ).tag(config=True)
    workers = Integer(help="Check workers run at once. Default: the number of CPUs.").tag(
        config=True
    )
    trust_poll_interval = Float(
        2.0,
        help="Seconds between re-reads of the trust table, so that `jupyter handoff trust "
        "add` takes effect in a running agent without a restart.",
    ).tag(config=True)
    sandbox = Enum(
        ["auto", "bwrap", "rlimits"],
        "auto",
        help="How model code (checks, conversion, the MLflow worker) is confined. 'bwrap': "
        "bubblewrap namespaces (no network, no view of the agent's files or /proc) plus "
        "rlimits; refuse to run model code without it. 'rlimits': limits, no-new-privs and a "
        "killed process group only. 'auto': bwrap when it runs here, else rlimits with a "
        "warning. Central's policy ([sandbox] require = true) can demand bwrap.",
    ).tag(config=True)
    bwrap_path = Unicode(
        "bwrap", help="The bubblewrap executable, a name on PATH or an absolute path."
    ).tag(config=True)
    sandbox_max_processes = Integer(
        help="Processes and threads one worker may have at once (RLIMIT_NPROC, and a pids "
        "cgroup where the agent may create one: the kernel ignores RLIMIT_NPROC for root). "
        "Default: 256, or 8 per CPU on larger machines (BLAS and OpenMP start a thread per CPU).",
    ).tag(config=True)
    sandbox_max_file_size = Integer(
        1 << 30,
        help="Largest file a check worker may write (RLIMIT_FSIZE), and the size of its /tmp.",
    ).tag(config=True)

    @default("home")
    def _home_default(self):
        return str(default_home())

    @default("token")
    def _token_default(self):
        # Read once, then gone: the agent keeps no secret in its environment (or /proc).
        return secret_from_environ("HANDOFF_TOKEN") or secrets.token_urlsafe(32)

    @validate("token")
    def _check_token(self, proposal):
        token = proposal["value"]
        if len(token) < MIN_TOKEN_CHARS or token != token.strip():
            raise TraitError(
                f"The API token (c.HandoffAgent.token or HANDOFF_TOKEN) is too short to be "
                f"secret: it needs at least {MIN_TOKEN_CHARS} characters (128 bits), without "
                f"spaces around it. Generate one with: {TOKEN_HINT}"
            )
        return token

    owner_name = Unicode(
        help="User name of whoever holds the agent's own token. Default: the OS user."
    ).tag(config=True)

    @default("owner_name")
    def _owner_default(self):
        import getpass

        try:
            return getpass.getuser()
        except Exception:  # containers without a passwd entry
            return "owner"

    @default("forward_to")
    def _forward_to_default(self):
        return ["central"] if self.role == "local" else []

    @default("sandbox_max_processes")
    def _max_processes_default(self):
        return max(256, 8 * (os.cpu_count() or 1))

    @default("workers")
    def _workers_default(self):
        return max(1, os.cpu_count() or 1)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._check_token({"value": self.token})  # traitlets skips validating a default
        home = Path(self.home)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = BlobStore(home / "blobs")
        self.store.clean_temp()
        self.registry = Registry(home / "registry.db")
        self.checks_available = {**discover(), **self.extra_checks}
        missing = [c for c in self.checks if c not in self.checks_available]
        if missing:
            log.warning("unknown checks %s; registered: %s", missing, sorted(self.checks_available))
        self.gate = GatePolicy(parent=self)
        self.ingest = IngestManager(
            self.store, self.registry, self.max_bundle_size, self.checks, self.gate
        )
        # One thread owns the SQLite connection; another pool does hashing and fsync.
        self._db = ThreadPoolExecutor(1, thread_name_prefix="handoff-db")
        self._io = ThreadPoolExecutor(4, thread_name_prefix="handoff-io")
        self.events = EventBus()
        self.owner = {"user": self.owner_name, "roles": ["admin", "analyst", "reviewer"]}
        self.setup_pipeline()
        self.trusted_types = self.load_trusted()
        self.model_sandbox = self._make_sandbox(home)
        self.runner: CheckRunner | None = None
        self.server: httpserver.HTTPServer | None = None

    def _make_sandbox(self, home: Path) -> Sandbox:
        from jupyter_core.paths import jupyter_runtime_dir

        from .forwarding.central import central_home

        return Sandbox(
            self.sandbox,
            self.bwrap_path,
            require=bool(self.policy and self.policy.sandbox_require),
            hidden=[str(home), jupyter_runtime_dir(), str(central_home()), str(default_home())],
        )

    def worker_limits(self, file_size: int | None = None) -> Limits:
        return Limits(
            memory=self.check_memory_limit,
            file_size=file_size or self.sandbox_max_file_size,
            processes=self.sandbox_max_processes,
        )

    # the managers' blocking calls, run off the event loop
    async def call(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            self._db, partial(fn, *args, **kwargs)
        )

    async def run_io(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._io, partial(fn, *args))

    async def create_version(self, name, digest, size, manifest, actor):
        version, created = await self.call(
            self.ingest.create_version,
            name,
            digest,
            size,
            manifest,
            actor or "analyst",
            self.gate.verdict,
            self.forward_for,
        )
        if created:
            self.events.publish(
                "version",
                model=name,
                version=version["number"],
                status=version["status"],
                checks=list(self.checks),
            )
            if version.get("verdict"):  # no checks: concluded with the push itself
                vid = await self.call(self.registry.version_id, name, version["number"])
                await self.write_reports(name, version["number"], vid)
            await self.schedule_queued()
            self.forwarder.wake.set()
        return version, created

    async def schedule_queued(self) -> None:
        runs = await self.call(self.registry.queued_checks)
        fresh = [r for r in runs if r["id"] not in self._scheduled]
        self._scheduled.update(r["id"] for r in fresh)
        if fresh:
            self.runner.schedule(fresh)

    def job_context(self, model: str, number: int) -> dict:
        """What a worker needs beyond the bundle: the champion, the previous manifest, and
        each check's settings (policy thresholds, then the push's --gate overrides)."""
        manifest = self.registry.manifest_of(model, number) or {}
        champion = self.registry.champion(model, number)
        if champion:
            champion["bundle"] = str(self.store.path(champion["digest"]))
        return {
            "champion": champion,
            "previous_manifest": self.registry.manifest_of(model, number - 1),
            "config": {c: self.gate.check_config(c, manifest.get("gate")) for c in self.checks},
        }

    async def start_check(self, run_id: int, model: str, number: int, check: str) -> None:
        await self.call(self.registry.start_check, run_id)
        self.events.publish("check", model=model, version=number, check=check, status="running")

    async def finish_check(self, run_id, status, message, result, duration) -> None:
        out = await self.call(
            self.registry.finish_check,
            run_id,
            status,
            message,
            result,
            duration,
            self.gate.verdict,
            self.forward_for,
        )
        self.events.publish(
            "check",
            model=out["model"],
            version=out["version"],
            check=out["check"],
            status=status,
            message=message,
            duration=duration,
        )
        if "verdict" in out:
            self.events.publish(
                "verdict",
                model=out["model"],
                version=out["version"],
                status=out["status"],
                **out["verdict"],
            )
            await self.write_reports(out["model"], out["version"], out["version_id"])
            if self.role == "central":
                await self.on_central_verdict(
                    out["model"], out["version"], out["verdict"]["verdict"]
                )
            self.forwarder.wake.set()

    async def write_reports(self, model: str, number: int, version_id: int) -> None:
        version = await self.call(self.registry.get_version, model, number)
        rendered = await self.run_io(reports.render, version)
        digests = {}
        for kind, data in rendered.items():
            digests[kind] = await self.run_io(self.store.put_bytes, data)
        await self.call(self.registry.add_reports, version_id, digests)
        self.events.publish("report", model=model, version=number, kinds=sorted(digests))

    def make_app(self) -> web.Application:
        routes = [
            (r"/api/v1/health", HealthHandler),
            (r"/api/v1/openapi.json", OpenAPIHandler),
            (r"/api/v1/models", ModelsHandler),
            # Any name matches, so that a bad one gets a clear 400 rather than a 404.
            (r"/api/v1/models/(?P<name>[^/]+)/versions", VersionsHandler),
            (r"/api/v1/models/(?P<name>[^/]+)/champion", ChampionHandler),
            (r"/api/v1/models/(?P<name>[^/]+)/versions/(?P<number>[0-9]{1,18})", VersionHandler),
            (
                r"/api/v1/models/(?P<name>[^/]+)/versions/(?P<number>[0-9]{1,18})/report",
                ReportHandler,
            ),
            (r"/api/v1/events", EventsHandler),
            (r"/api/v1/whoami", WhoamiHandler),
            (r"/api/v1/intake", IntakeHandler),
            (r"/api/v1/lineage", LineageHandler),
            (r"/api/v1/outbox", OutboxHandler),
            (r"/api/v1/trust", TrustHandler),
        ]
        version = r"/api/v1/models/(?P<name>[^/]+)/versions/(?P<number>[0-9]{1,18})"
        routes += [
            (version + "/bundle", BundleHandler),
            (version + "/forward", ForwardHandler),
            (version + "/signoffs", SignoffHandler),
            (version + "/transition", TransitionHandler),
        ]
        return web.Application(
            routes,
            agent=self,
            default_handler_class=NotFoundHandler,
            xsrf_cookies=False,
            log_function=log_request,  # query secrets redacted
        )

    async def start(self) -> int:
        """Listen and resume unfinished checks. Returns the bound port."""
        self._scheduled: set[int] = set()
        self.runner = CheckRunner(
            self,
            self.workers,
            self.check_timeout,
            self.check_memory_limit,
            limits=self.worker_limits(),
        )
        self.app = self.make_app()
        self.server = httpserver.HTTPServer(
            self.app,
            max_body_size=self.max_bundle_size + 1,
            max_buffer_size=4 << 20,
            chunk_size=1 << 20,  # fewer, larger reads: ingest runs at disk speed
            idle_connection_timeout=3600,
            body_timeout=3600,
        )
        self.server.listen(self.port, address=self.ip)
        port = self.port or self._bound_port()
        requeued = await self.call(self.registry.requeue_interrupted)
        if requeued:
            log.info("re-running %d checks interrupted by a restart", requeued)
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        self.url = f"http://{host}:{port}"
        await self.call(audit.lifecycle_start, self.registry.db, self._lifecycle())
        await self.runner.warm()
        await self.schedule_queued()
        self.forwarder.start()
        self.start_trust_watch(self.trust_poll_interval)
        return port

    def _lifecycle(self) -> dict:
        return {"role": self.role, "agent_id": self.agent_id, "pid": os.getpid()}

    def _bound_port(self) -> int:
        for sock in self.server._sockets.values():
            return sock.getsockname()[1]
        raise RuntimeError("the agent is not listening")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        await self.stop_trust_watch()
        if self.runner is not None:
            await self.runner.close()
        await self.forwarder.stop()
        self._io.shutdown(wait=True)
        if self.server is not None:  # started: its agent.start gets its agent.stop
            self._db.submit(audit.lifecycle_stop, self.registry.db, self._lifecycle()).result()
        self._db.submit(self.registry.close).result()
        self._db.shutdown(wait=True)
