"""The agent service: configuration, the tornado app, and the managers it wires together."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir, jupyter_runtime_dir
from tornado import httpserver, web
from traitlets import (
    Bool,
    Dict,
    Enum,
    Float,
    Integer,
    List,
    TraitError,
    Unicode,
    default,
    validate,
)
from traitlets.config import LoggingConfigurable

from . import keys, pipeline, reports, tokens
from .check_flow import CheckFlow
from .check_settings import DeclaredSettings
from .disk_room import DiskRoom
from .events import EventBus
from .forwarding.notices import Notices
from .forwarding.service import ForwardService
from .gate import GatePolicy
from .handlers.audit import AuditHandler
from .handlers.base import NotFoundHandler, log_request
from .handlers.deployments import (
    DeploymentHandler,
    FeedbackHandler,
    PredictHandler,
    PredictionsHandler,
    RollbackHandler,
    TrafficHandler,
    ValidationHandler,
)
from .handlers.events import DeploymentEventsHandler, EventsHandler
from .handlers.inventory import DossierHandler, InventoryHandler, KeysHandler
from .handlers.models import (
    ChampionHandler,
    HealthHandler,
    MetaHandler,
    ModelsHandler,
    OpenAPIHandler,
    PruneHandler,
    ReadyHandler,
    ReportHandler,
    VersionHandler,
    VersionsHandler,
)
from .handlers.monitor import AlertsHandler, MonitorHandler, MonitorRunHandler
from .handlers.pipeline import (
    BundleHandler,
    DeliveriesHandler,
    ForwardHandler,
    IntakeHandler,
    LineageHandler,
    NoticesHandler,
    OutboxHandler,
    SignoffHandler,
    TokensHandler,
    TransitionHandler,
    WhoamiHandler,
)
from .handlers.reviews import ModelReviewsHandler, ReviewsHandler
from .handlers.trust import TrustHandler
from .handlers.watches import (
    LineageGraphHandler,
    RevalidationsHandler,
    WatchCheckHandler,
    WatchesHandler,
    WatchHandler,
)
from .http_server import BoundedHTTPServer
from .ingest import IngestManager
from .intake import IntakeManager
from .openapi import body_names, query_names, template
from .outage import failed_round, until_recorded
from .plugins import GROUPS, PluginRegistry, default_registry
from .policy import Policy
from .pools import Pools
from .probes import ProbePool
from .replica_events import ReplicaEvents
from .retention import Retention
from .runner import CheckRunner
from .sandbox import Limits, Sandbox
from .secrets_env import drop_secrets, secret_from_environ
from .serving.settings import Serving
from .stages import StageManager
from .store.blobs import open_blob_store
from .store.versions import CHECK_LEASE
from .trait_checks import MEMORY_WHY, MIN_WORKER_MEMORY, at_least, interface, positive
from .trust_flow import TrustFlow
from .versions import VersionService

log = logging.getLogger("handoff_agent")
# The events that follow a change that may owe a webhook notice (kept in its transaction).
NOTICED = frozenset(
    (
        "stage",
        "alert",
        "guardrail",
        "watch.alert",
        "watch.pause_canary",
        "watch.rollback_canary",
        "watch.revalidate",
    )
)
# 128 bits: 22 url-safe base64 characters (6 bits each), or 32 hex digits and more.
MIN_TOKEN_CHARS = 22
TOKEN_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def default_home() -> Path:
    return Path(jupyter_data_dir()) / "handoff"


def _token_use_failed(task: asyncio.Task) -> None:
    """A last-use write that failed for good: an error that waiting would not fix."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not note a token's use: %s", task.exception())


EMPTY_HOME = (
    "c.HandoffAgent.home (--home) is empty: give the agent's directory, or leave it out for "
    "the default, <jupyter data dir>/handoff."
)


def absolute_home(value: str) -> str:
    """A given home as an absolute path: the runtime file and the home lock name it, and
    commands run from another directory must find the same one. Empty: ValueError."""
    if not value.strip():
        raise ValueError(EMPTY_HOME)
    return str(Path(value).expanduser().absolute())


class HandoffAgent(LoggingConfigurable):
    """The agent: receives pushes, stores them durably, runs checks, hands them off.
    In the central role it takes signed deliveries and walks versions through stages.

    Its configuration, and the composition root (``build``): it makes the services, each
    given only what it uses (typed as small Protocols), and the app whose handlers call them.
    """

    home = Unicode(
        help="Directory for the registry and blobs. Default: <jupyter data dir>/handoff"
    ).tag(config=True)
    database_url = Unicode(
        help="Where the metadata (versions, audit, outbox, tokens, stages) lives, as a "
        "SQLAlchemy URL. Default: the SQLite file <home>/registry.db. For central replicas "
        "sharing one database: postgresql://USER:PASSWORD@HOST/DB (PostgreSQL >= 15, "
        "psycopg 3). Or set HANDOFF_DATABASE_URL, dropped from the agent's environment at start, "
        "which keeps the password off the command line. The password never appears in logs "
        "or `jupyter handoff status`."
    ).tag(config=True)
    database_busy_timeout = Float(
        30.0,
        help="Seconds a write waits for another process's lock before the request is answered "
        "503 database_busy with Retry-After: on SQLite a lock on the database file (two agents "
        "on one file, a backup), on PostgreSQL a row or table lock another session holds (its "
        "lock_timeout); counted from when the request asked, however many writes queue with it.",
    ).tag(config=True)
    blob_url = Unicode(
        "",
        help="Where blobs (bundles, reports) live. Empty: <home>/blobs. 'file:///path': a "
        "directory. 's3://bucket/prefix': an S3-compatible bucket (endpoint from "
        "s3_endpoint_url; credentials only from the standard AWS chain, never logged).",
    ).tag(config=True)
    s3_endpoint_url = Unicode(
        help="S3 endpoint for an s3:// blob_url, e.g. http://minio.internal:9000. "
        "Default: AWS_ENDPOINT_URL, or AWS itself when that is unset."
    ).tag(config=True)
    s3_multipart_threshold = Integer(
        8 << 20,
        help="Blobs at least this large (bytes) go to S3 as multipart uploads, in parts of "
        "this size (at least 5 MiB).",
    ).tag(config=True)
    ip = Unicode("127.0.0.1", help="Interface to bind. Loopback unless you know why not.").tag(
        config=True
    )
    port = Integer(0, min=0, max=65535, help="Port to listen on. 0 picks a free port.").tag(
        config=True
    )
    token = Unicode(
        help="API token. Generated at random on each start unless set (or HANDOFF_TOKEN is, "
        "which is dropped from the environment at start either way). "
        f"At least {MIN_TOKEN_CHARS} characters (128 bits as url-safe base64), e.g. from "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
    ).tag(config=True)
    role = Enum(
        ["local", "central"],
        "local",
        help="'local' for an analyst's agent, 'central' for IT's intake.",
    ).tag(config=True)
    allowed_hosts = List(
        Unicode(), help="Host names accepted besides loopback (DNS-rebinding protection)."
    ).tag(config=True)
    allowed_origins = List(
        Unicode(), help="Browser origins allowed to call the API cross-origin."
    ).tag(config=True)
    max_bundle_size = Integer(
        4 << 30, help="Largest bundle accepted, in bytes. Larger uploads get 413."
    ).tag(config=True)
    min_free_space = Integer(
        100 << 20,
        help="Bytes the agent keeps free on its disk for its database, reports and check "
        "results. A bundle that would leave less is refused (503 disk_full, with Retry-After) "
        "before a byte of it is stored; 0 lets any bundle try. A disk that fills anyway is "
        "refused the same way, and nothing is half-stored.",
    ).tag(config=True)
    disk_full_retry_after = Integer(
        60,
        min=1,
        help="Seconds a push or delivery refused for a full disk is asked to wait before "
        "trying again (its Retry-After): a delivery waits that long in its sender's outbox.",
    ).tag(config=True)
    keep_versions = Integer(
        0,
        help="Retention: after each verdict, remove the bundles of the model's versions older "
        "than its newest keep_versions that nothing needs (as `jupyter handoff prune --keep "
        "N`); their records, reports and audit rows stay. 0 keeps every bundle.",
    ).tag(config=True)
    spool_stall_timeout = Float(
        60.0,
        help="Seconds a spool entry a local kernel is still writing may go without growing "
        "before the push is refused (the kernel hung while writing it).",
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
        help="Checks run on every push, by registered name (handoff_agent.plugins: the "
        "built-ins, entry point group handoff_agent.checks, and c.HandoffAgent.plugins).",
    ).tag(config=True)
    extra_checks = Dict(
        help="Extra checks as name -> 'module:attr', for plugins not installed as entry points. "
        "Same as c.HandoffAgent.plugins = {'check': {...}}."
    ).tag(config=True)
    plugins = Dict(
        help="Plugins registered by configuration, as {kind: {name: 'module:attr'}}; kinds "
        f"are {', '.join(GROUPS)}. They replace a built-in or installed plugin of that name."
    ).tag(config=True)
    entry_point_plugins = Bool(
        True,
        help="Load plugins installed in the entry point groups (handoff_agent.checks, "
        ".forwarders, .deployers, .monitors). False: the built-ins and "
        "c.HandoffAgent.plugins only, as the test suite runs.",
    ).tag(config=True)
    signing_key_file = Unicode(
        help="Central only: an ed25519 private key PEM (mode 0600 or 0400, e.g. a mounted "
        "secret) to sign dossiers with, instead of <home>/signing-key.pem, which Handoff makes. "
        "Give every replica the same file and they sign alike. Handoff never writes it: to "
        "rotate, replace it and restart; the key it held before stays published as retired. "
        "Central refuses to start when it is missing, not ed25519, or readable by others."
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
    forward_backoff = Float(
        1.0, help="First retry delay of a failed delivery, in seconds (more than 0)."
    ).tag(config=True)
    forward_backoff_cap = Float(
        300.0, help="Longest delay between delivery retries, in seconds (more than 0)."
    ).tag(config=True)
    notice_retry_seconds = List(
        Float(),
        [5.0, 30.0, 120.0],
        help="Delays before each retry of a webhook notice (an alert, a rollback, a trigger, a "
        "review) that its receiver refused for now (5xx, 429, unreachable).",
    ).tag(config=True)
    check_timeout = Float(120.0, help="Seconds one check may run before it is stopped.").tag(
        config=True
    )
    check_lease = Float(
        CHECK_LEASE,
        help="Seconds an agent's claim on a check run holds. The agent running it renews it "
        "every third of that; when a replica dies for good (kill -9, a lost machine), any "
        "replica sharing the database runs its checks again once the claim has lapsed. Longer "
        "than any stall of a live replica (a database failover), or a check runs twice and "
        "only the second result counts.",
    ).tag(config=True)
    revalidation_timeout = Float(
        1800.0,
        help="Seconds a revalidation (a watch's checks again on a source's rows) may run "
        "before it fails. One left running past it by a stopped agent is failed by any agent "
        "sharing the database, a minute later.",
    ).tag(config=True)
    watch_max_rows = Integer(
        1_000_000,
        min=1,
        help="Rows read of each watched file (CSV, or Parquet a row group at a time) or of a "
        "watched query's result, for the statistics of a fingerprint and the rows a "
        "revalidation checks; a source with more is said so once in the log and in its check. "
        "Bounds the memory a large source takes; a file's hash still covers all of it.",
    ).tag(config=True)
    check_memory_limit = Integer(
        8 << 30, help="Address-space limit (RLIMIT_AS) of a check worker, in bytes."
    ).tag(config=True)
    workers = Integer(
        help="Check workers run at once: a version's checks are spread over them, the first "
        "checks (loads, smoke, performance) in the first. 1 runs each version's checks one "
        "after another in one worker. Each worker's OpenMP, OpenBLAS and MKL may start the "
        "CPUs / workers threads, unless the agent's environment sets OMP_NUM_THREADS and the "
        "others. At least 1; default: the number of CPUs."
    ).tag(config=True)
    check_memory_budget = Integer(
        help="Bytes all check workers together may use: no more workers run at once than "
        "fit in it at check_memory_limit each (at least one). Default: the physical memory."
    ).tag(config=True)
    warm_workers = Integer(
        None,
        allow_none=True,
        help="Check workers kept started ahead of the next push, their imports (scikit-learn, "
        "matplotlib) done, so its first verdict does not wait ~1.5 s for them. Each is an idle "
        "sandboxed Python of ~150 MB. 0 starts workers only when checks run. Default: one per "
        "worker slot.",
    ).tag(config=True)
    probe_workers = Integer(
        2,
        help="Central: sandboxed workers kept warm to read which types a delivered bundle "
        "needs (its skops schema; no model code runs). Each takes one delivery at a time.",
    ).tag(config=True)
    db_threads = Integer(
        4,
        help="Threads that run store calls at once: reads on either backend; writes too on "
        "PostgreSQL (SQLite takes one writer). At most the connection pool's size.",
    ).tag(config=True)
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

    watch_tick = Float(
        1.0,
        help="Seconds between looks for watched data sources that are due (each source has "
        "its own period, --every); a due source is fingerprinted by one agent or replica.",
    ).tag(config=True)

    retrain_poll = Float(
        60.0,
        help="Local agent: seconds between asks to central for monitor alerts whose "
        "[monitor.actions] action is retrain; each runs the model's registered retraining "
        "notebook (a watch with --run) once. More than 0.",
    ).tag(config=True)

    @default("home")
    def _home_default(self):
        return str(default_home().absolute())

    @validate("home")
    def _check_home(self, proposal):
        try:
            return absolute_home(proposal["value"])
        except ValueError as e:
            raise TraitError(str(e)) from None

    @default("database_url")
    def _database_url_default(self):
        return secret_from_environ("HANDOFF_DATABASE_URL") or ""

    @default("s3_endpoint_url")
    def _s3_endpoint_default(self):
        return os.environ.get("AWS_ENDPOINT_URL", "")

    @default("token")
    def _token_default(self):
        # Read once, then gone: the agent keeps no secret in its environment (or /proc).
        return secret_from_environ("HANDOFF_TOKEN") or secrets.token_urlsafe(32)

    _ip = interface("ip")
    # 0 or less: an idle agent polls in a busy loop, every push is too large, every check
    # times out at once, no store call runs, (a pids limit of 0) no worker starts, no check
    # or probe ever runs, a refused delivery is retried in a busy loop, every claim lapses
    # at once, or every push, revalidation or file a worker writes is refused.
    _positive = positive(
        *("trust_poll_interval", "watch_tick", "notice_retry_seconds", "max_bundle_size"),
        *("check_timeout", "db_threads", "sandbox_max_processes", "workers", "probe_workers"),
        *("forward_backoff", "forward_backoff_cap", "retrain_poll", "check_lease"),
        *("spool_stall_timeout", "revalidation_timeout", "sandbox_max_file_size"),
    )
    # Below 0 means nothing; 0 says something (no wait, no reserve, none kept warm).
    _none_below_0 = at_least(
        0,
        "0 turns it off",
        *("database_busy_timeout", "min_free_space", "warm_workers", "check_memory_budget"),
    )
    _memory = at_least(MIN_WORKER_MEMORY, MEMORY_WHY, "check_memory_limit")

    @validate("keep_versions")
    def _check_keep(self, proposal):
        if proposal["value"] < 0:
            raise TraitError(
                "c.HandoffAgent.keep_versions must be 0 (keep every bundle) or more, e.g. 5."
            )
        return proposal["value"]

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

    @default("check_memory_budget")
    def _memory_budget_default(self):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return 0  # unknown: bounded by workers only

    def __init__(self, plugin_registry: PluginRegistry | None = None, **kwargs):
        super().__init__(**kwargs)
        self._check_token({"value": self.token})  # traitlets skips validating a default
        # The defaults above read their variables; a configured value leaves them unread.
        self.database_url  # noqa: B018
        drop_secrets()
        self._check_home({"value": self.home})  # and a value equal to Unicode's default, ""
        for name in ("sandbox_max_processes", "workers"):  # or to Integer's, 0
            self._positive({"trait": self.traits()[name], "value": getattr(self, name)})
        if plugin_registry is None:
            extra = {
                **self.plugins,
                "check": {**self.extra_checks, **self.plugins.get("check", {})},
            }
            plugin_registry = default_registry(self.entry_point_plugins, extra)
        self.plugin_registry = plugin_registry
        home = Path(self.home)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.build(home)
        self.runner: CheckRunner | None = None
        self.server: httpserver.HTTPServer | None = None

    def build(self, home: Path) -> None:
        """The composition root: every service, each given only what it uses."""
        from .store.metadata import MetadataStore

        given_key = None  # before any store opens: a bad key file refuses the start cleanly
        if self.role == "central" and self.signing_key_file:
            given_key = keys.load_file(self.signing_key_file)
        self.store = open_blob_store(
            self.blob_url, home, self.s3_endpoint_url, self.s3_multipart_threshold
        )
        self.store.clean_temp()
        # The metadata store; handlers read through it, services write through it.
        self.registry = MetadataStore.for_home(home, self.database_url, self.database_busy_timeout)
        self.checks_available = self.plugin_registry.specs("check")
        missing = [c for c in self.checks if c not in self.checks_available]
        if missing:
            log.warning("unknown checks %s; registered: %s", missing, sorted(self.checks_available))
        sqlite = self.registry.backend == "sqlite"
        self.pools = Pools(
            writers=1 if sqlite else self.db_threads,
            readers=self.db_threads,
            store=self.registry if sqlite else None,
        )
        self._db, self._io = self.pools.db, self.pools.io
        self.instance_id = secrets.token_hex(8)  # this process, among replicas
        self.events = EventBus()
        self.replicas = None  # PostgreSQL: events reach and come from the other replicas
        if self.shares_events:
            self.replicas = ReplicaEvents(self.registry, self.events, self.pools, self.instance_id)
            self.events.sink = self.replicas.share
        self.owner = {"user": self.owner_name, "roles": ["admin", "analyst", "reviewer"]}
        self.token_uses = tokens.LastUse()  # which stored tokens' last use is due a write
        self.agent_id = pipeline.agent_id(home)
        self.notices = Notices(
            self._webhooks,
            self.run_io,
            self.notice_retry_seconds,
            self.registry,
            self.call,
            self.agent_id,
            lambda: self.url,  # a kept notice's link names where this agent listens now
        )
        self.url = ""  # this agent's base URL, once it listens
        self.policy = self.stages = self.intake = self.deployments = self.monitor = None
        self.policy_path = ""  # central: the policy file it read (`token create` reads it too)
        self.guardrails = None  # serving.canary_guard.Guardrails (central)
        if self.role == "central":
            from .serving.deploy import DeploymentService

            # Absolute: the runtime file names it to commands run from any directory.
            given = self.policy_file or pipeline.embedded_policy(home)
            self.policy_path = str(Path(given).absolute())
            self.policy = Policy.load(self.policy_path)
            # Stages move the model server's slots in the stage change's own transaction.
            self.deployments = DeploymentService(self.registry, self.policy)
            self.stages = StageManager(self.registry, self.policy, self.deployments.on_stage)
            self.guardrails = self._make_guardrails()
            self.deployments.owed = self.stages.owed  # its stage sets owe what others do
        self._tasks: set[asyncio.Task] = set()  # bookkeeping under way (a task needs a reference)
        from .monitor.service import MonitorService

        # Watches every logged model's windows; rolls back through the StageManager, so the
        # slots (and the model servers' traffic) move with the stage.
        self.monitor = MonitorService(self.registry, self.store, self.policy, self.stages)
        self._monitor_task = None
        # Central signs dossiers with an ed25519 key: the operator's file, or its own, made at
        # first start (0600, home).
        self.signing_key = None
        if given_key is not None:
            self.signing_key = given_key
        elif self.role == "central":
            made = not (Path(home) / keys.KEY_FILE).exists()
            self.signing_key = keys.load_or_create(home)
            if made and self.registry.audit_head()["seq"] > 0:
                log.warning(
                    "made a new signing key %s: this database has a history, so its key was "
                    "lost or left out of a restore (GET /api/v1/keys lists the old one as "
                    "retired if this Handoff saw it), or this is another replica: give every "
                    "replica one key with c.HandoffAgent.signing_key_file",
                    keys.key_id(self.signing_key.public_key()),
                )
        self.model_sandbox = self._make_sandbox(home)
        self.probe_pool = ProbePool(
            self.model_sandbox, self.worker_limits(), self.probe_workers, self.check_timeout
        )
        # What the checks declare, asked of a sandboxed worker: a push's --gate must fit it.
        self.declared_settings = DeclaredSettings(
            self.model_sandbox,
            self.worker_limits(),
            {c: self.checks_available[c] for c in self.checks if c in self.checks_available},
            self.check_timeout,
        )
        self.gate = GatePolicy(
            parent=self, checks=list(self.checks), declared=self.declared_settings.settings
        )
        if self.policy is not None:  # central: its policy's say on the gate
            self.gate.honour_pushed = self.policy.gate_overrides
            self.gate.required = [*self.gate.required, *self.policy.required_checks]
        for key, names in (("thresholds", self.gate.thresholds), ("blocking", self.gate.blocking)):
            typos = sorted(set(names) - set(self.checks_available))
            if typos:  # a misspelt check's thresholds or blocking would be ignored silently
                raise ValueError(
                    f"c.GatePolicy.{key} names {typos}, which no registered check is: the "
                    f"checks are {', '.join(sorted(self.checks_available))}."
                )
        unknown = sorted(set(self.gate.required) - set(self.checks))
        if unknown:
            raise ValueError(
                f"Required checks {unknown} are not among the checks this agent runs "
                f"({', '.join(self.checks)}): fix required_checks, or add them to checks."
            )
        bundle_limits = self.worker_limits(
            file_size=max(self.sandbox_max_file_size, 2 * self.max_bundle_size)
        )
        self.destinations = pipeline.destinations(
            self.plugin_registry, list(self.forward_to), self.config
        )
        self._warn_of_an_unused_webhook()
        if self._webhooks():
            # Each notice commits with the change that owes it (a version waits for people,
            # an alert, a rollback, a watch's trigger); with no webhook none is owed, and
            # nothing is read for one. The event that follows the commit wakes the sender.
            if self.stages is not None:
                self.stages.notify = self._keep_notice
            if self.guardrails is not None:
                self.guardrails.notify = self.notices.keep
            self.monitor.notify = self.notices.keep
            self.events.watchers.append(self._noticed)
        self.forwarding = ForwardService(
            self.registry,
            self.store,
            self.pools,
            self.events,
            self.destinations,
            self.agent_id,
            list(self.forward_on) if self.role == "local" else [],
            self.model_sandbox,
            bundle_limits,
            self.check_timeout,
            self.forward_backoff,
            self.forward_backoff_cap,
        )
        forward_for = self.forwarding.forward_for
        self.versions = VersionService(self.registry, self.gate.verdict, forward_for)
        self.retention = Retention(self.registry, self.store, self.versions.champion)
        self.room = room = DiskRoom(
            self.store, self.min_free_space, self.role, self.disk_full_retry_after
        )
        self.ingest = IngestManager(
            self.store,
            self.registry,
            self.max_bundle_size,
            self.gate,
            self.spool_stall_timeout,
            room,
        )
        self.check_flow = CheckFlow(
            self.registry,
            self.store,
            self.versions,
            self.gate,
            list(self.checks),
            self.events,
            self.pools,
            self.agent_id,
            wake=self.forwarding.wake,
            lease=self.check_lease,
        )
        if self.role == "central":
            self.intake = IntakeManager(
                self.registry,
                self.store,
                self.versions,
                self.stages,
                self.policy,
                self.max_bundle_size,
                room,
                self.gate.check_delivered,
            )
        self.trust_flow = TrustFlow(
            self.registry,
            self.store,
            self.pools,
            self.events,
            self.probe_pool,
            list(self.checks),
            self.check_flow.schedule_queued,
            self.policy,
            self.stages,
            self.intake,
        )
        if self.role == "central":
            self.check_flow.verdict_hooks.append(self.trust_flow.on_verdict)
        if self.keep_versions:
            self.check_flow.verdict_hooks.append(self._retain)
        from .watch.service import WatchService

        self.watches = WatchService(
            self.registry,
            self.store,
            self.pools,
            self.events,
            home,
            self.role,
            self.agent_id,
            self.deployments,
            # a watch's alert or action reaches the webhooks, kept in its trigger's transaction
            notify=self.notices.keep if self._webhooks() else None,
        )
        self.watches.tick_seconds = self.watch_tick
        self.watches.revalidation_timeout = self.revalidation_timeout
        self.watches.max_rows = self.watch_max_rows
        # the policy's [[watch]] tables, checked now: a bad one stops the start before it
        # listens or starts the model server (registered at start)
        self.policy_watches = (
            self.watches.policy_specs(self.policy.watches, self.policy_path)
            if self.policy is not None
            else []
        )
        from .watch.revalidate import Revalidator

        # the revalidate action: the checks again, in the same sandboxed workers as a push's
        self.watches.revalidator = Revalidator(
            self.registry, self.gate, self.pools, home, list(self.checks)
        )
        self.watches.revalidator.make_runner = self._revalidation_runner
        self.watches.revalidator.max_rows = self.watch_max_rows
        if self.role == "local" and "central" in self.destinations:
            self.watches.central_alerts = self.central_alerts
            self.watches.retrain_poll = self.retrain_poll
        self.validation = self._make_validation() if self.role == "central" else None
        self.serving = Serving(parent=self)
        self.model_server = None  # serving.server.ModelServer, once started (central)
        # Called every c.Serving.tick_seconds with the model server, once the tick's stats are
        # stored (the guardrails); register before start. It becomes the server's tick_hooks.
        self.serving_tick_hooks: list = [self.guardrails.on_tick] if self.guardrails else []
        self.serving_url: str | None = None

    def _make_validation(self):
        """Central: entering validated converts to ONNX and load-tests, in the background;
        queued in the stage change's transaction, and a failed gate blocks moving on."""
        from .serving.validation import Validation, ValidationService

        service = ValidationService(
            Validation(parent=self),
            self.registry,
            self.store,
            self.pools,
            self.events,
            self.model_sandbox,
            self.worker_limits(),
            self.policy,
            self.agent_id,
            lambda: self.trusted_types,
            lambda: self.token,
            self.check_flow.write_reports,
            self.deployments,
        )
        deploy = self.stages.on_stage

        def on_stage(*args):
            deploy(*args)  # the slots first: validated puts the version in the test slot
            service.on_stage(*args)

        self.stages.on_stage = on_stage
        self.stages.guards.append(service.guard)
        return service

    def _make_sandbox(self, home: Path) -> Sandbox:
        from .homes import central_home

        return Sandbox(
            self.sandbox,
            self.bwrap_path,
            require=bool(self.policy and self.policy.sandbox_require),
            hidden=[str(home), jupyter_runtime_dir(), str(central_home()), str(default_home())],
        )

    def _make_guardrails(self):
        """Central: every canary judged each serving tick on all replicas' stats (rolled back
        at once on an alarm, stepped when a step held); promotion waits for a clean bake,
        the move to canary for a passed shadow; the deployment view reads them."""
        from .serving.canary_guard import Guardrails

        guardrails = Guardrails(
            self.registry, self.deployments, self.policy, self.events.publish, self.instance_id
        )
        self.stages.guards.append(guardrails.guard)
        self.deployments.judge = guardrails.judge
        return guardrails

    def worker_limits(self, file_size: int | None = None) -> Limits:
        return Limits(
            memory=self.check_memory_limit,
            file_size=file_size or self.sandbox_max_file_size,
            processes=self.sandbox_max_processes,
        )

    @property
    def trusted_types(self) -> list[str]:
        return self.trust_flow.trusted_types

    # the managers' blocking calls, run off the event loop (handlers use these)
    async def call(self, fn, *args, **kwargs):
        return await self.pools.call(fn, *args, **kwargs)

    async def run_io(self, fn, *args):
        return await self.pools.run_io(fn, *args)

    async def run_follow(self, fn, *args):
        return await self.pools.run_follow(fn, *args)

    def note_token_use(self, hashed: str) -> None:
        """A stored token's last use, when due (``tokens.LastUse``): bookkeeping its request
        does not wait for (another process holding the database would hold every read up),
        written once the database takes it."""
        if self.token_uses.due(hashed):
            write = partial(self.call, tokens.note_use, self.registry, hashed)
            task = asyncio.get_running_loop().create_task(until_recorded("a token's use", write))
            self._tasks.add(task)
            task.add_done_callback(_token_use_failed)
            task.add_done_callback(self._tasks.discard)

    @property
    def token_max_age(self) -> str:
        """Central's ``[tokens] max_age``: a new token's default and longest life ("": none)."""
        return self.policy.token_max_age if self.policy else ""

    async def read(self, fn, *args, **kwargs):
        """A read-only store call (listing, one version): off the writers' queue."""
        return await self.pools.read(fn, *args, **kwargs)

    @property
    def shares_events(self) -> bool:
        """Replicas share a PostgreSQL database; they see each other's events through it."""
        return self.registry.backend == "postgresql"

    def meta(self) -> dict:
        """``GET /api/v1/meta``: the vocabulary, with the stage flow of the live policy
        (central) or the default one (a local agent mirrors central's stages)."""
        from .monitor_policy import describe_alerts
        from .policy import Policy
        from .vocabulary import meta

        policy = self.policy or Policy()
        return meta(
            policy.stages,
            role=self.role,
            policy="central" if self.policy else "default",
            deploy=policy.deploy.describe(),
            monitor=policy.monitor.describe(),
            alerts=describe_alerts(),
        )

    def make_app(self) -> web.Application:
        routes = [
            (r"/api/v1/health", HealthHandler),
            (r"/api/v1/ready", ReadyHandler),
            (r"/api/v1/openapi.json", OpenAPIHandler),
            (r"/api/v1/meta", MetaHandler),
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
            (r"/api/v1/reviews", ReviewsHandler),
            (r"/api/v1/intake", IntakeHandler),
            (r"/api/v1/lineage", LineageHandler),
            (r"/api/v1/lineage/graph", LineageGraphHandler),
            (r"/api/v1/watches", WatchesHandler),
            (r"/api/v1/watches/(?P<source_id>[0-9]{1,18})", WatchHandler),
            (r"/api/v1/watches/(?P<source_id>[0-9]{1,18})/check", WatchCheckHandler),
            (r"/api/v1/outbox", OutboxHandler),
            (r"/api/v1/outbox/deliveries", DeliveriesHandler),
            (r"/api/v1/outbox/notices", NoticesHandler),
            (r"/api/v1/trust", TrustHandler),
            (r"/api/v1/tokens", TokensHandler),
            (r"/api/v1/inventory", InventoryHandler),
            (r"/api/v1/keys", KeysHandler),
            (r"/api/v1/audit", AuditHandler),
        ]
        version = r"/api/v1/models/(?P<name>[^/]+)/versions/(?P<number>[0-9]{1,18})"
        routes += [
            (version + "/bundle", BundleHandler),
            (version + "/forward", ForwardHandler),
            (version + "/signoffs", SignoffHandler),
            (version + "/transition", TransitionHandler),
            (version + "/dossier", DossierHandler),
            (version + "/validation", ValidationHandler),
            (version + "/revalidations", RevalidationsHandler),
        ]
        model = r"/api/v1/models/(?P<name>[^/]+)"
        routes += [
            (model + "/deployment", DeploymentHandler),
            (model + "/deployment/events", DeploymentEventsHandler),
            (model + "/deployment/rollback", RollbackHandler),
            (model + "/deployment/traffic", TrafficHandler),
            (model + "/predict", PredictHandler),
            (model + "/feedback", FeedbackHandler),
            (model + "/predictions", PredictionsHandler),
            (model + "/monitor", MonitorHandler),
            (model + "/monitor/run", MonitorRunHandler),
            (model + "/alerts", AlertsHandler),
            (model + "/reviews", ModelReviewsHandler),
            (model + "/prune", PruneHandler),
        ]
        # each route takes the query parameters and JSON body keys its OpenAPI operations declare
        routes = [
            (p, h, {"route": t, "query": query_names(t), "fields": body_names(t)})
            for p, h in routes
            for t in (template(p),)
        ]
        return web.Application(
            routes,
            agent=self,
            default_handler_class=NotFoundHandler,
            xsrf_cookies=False,
            log_function=log_request,  # query secrets redacted
        )

    def _check_runner(self, jobs, spares: int | None = None) -> CheckRunner:
        """A check runner reporting to ``jobs``, on this agent's sandbox and limits."""
        return CheckRunner(
            jobs,
            self.store,
            self.pools,
            self.checks_available,
            lambda: self.trust_flow.trusted_types,
            self.model_sandbox,
            self.workers,
            self.check_timeout,
            self.check_memory_limit,
            spares=self.warm_workers if spares is None else spares,
            limits=self.worker_limits(),
            memory_budget=self.check_memory_budget,
        )

    def _revalidation_runner(self, jobs) -> CheckRunner:
        """No warm spares: revalidations are rare; the push runner keeps its own."""
        return self._check_runner(jobs, spares=0)

    async def start(self) -> int:
        """Listen and resume unfinished checks. Returns the bound port."""
        self.runner = self._check_runner(self.check_flow)
        self.check_flow.runner = self.runner
        self.app = self.make_app()
        self.server = BoundedHTTPServer(
            self.app,
            max_body_size=self.max_bundle_size + 1,
            max_buffer_size=4 << 20,
            chunk_size=1 << 20,  # fewer, larger reads: ingest runs at disk speed
            body_timeout=3600,  # a bundle of gigabytes over a slow link
        )
        self.server.listen(self.port, address=self.ip)
        self.declared_settings.loop = asyncio.get_running_loop()
        port = self.port or self._bound_port()
        requeued = await self.call(self.registry.requeue_interrupted, self.agent_id)
        if requeued:
            log.info("re-running %d checks interrupted by a restart", requeued)
        if self.deployments is not None:
            placed = await self.call(self.deployments.adopt_unslotted)
            if placed:
                log.info(
                    "versions left by an older Handoff, put right: %s",
                    ", ".join(placed),
                )
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        self.url = self.forwarding.url = f"http://{host}:{port}"
        await self.call(self.registry.lifecycle_start, self._lifecycle())
        if self.signing_key is not None:
            public = self.signing_key.public_key()
            retired = await self.call(
                self.registry.signing_key_in_use,
                keys.key_id(public),
                keys.public_b64(public),
                "agent",
            )
            if retired:
                log.info("signing key %s; retired: %s", keys.key_id(public), ", ".join(retired))
            await self._warn_of_other_keys()
        await self.call(self.registry.outbox_release, self.agent_id)
        await self.runner.warm()
        self._io.submit(reports.warm)  # off the first report's path, not awaited
        if self.role == "central":
            await self.probe_pool.warm()
        if self.role == "central" and self.serving.enabled:
            await self.start_serving()
        if self.validation is not None:
            self.validation.start()
        self.check_flow.resume_concluded(received=self.role == "central")
        await self.check_flow.schedule_queued()
        self.check_flow.start_keeping()
        self.forwarding.start()
        self.notices.start()
        self.trust_flow.start_watch(self.trust_poll_interval)
        if self.policy_watches:
            await self.call(self.watches.register_specs, self.policy_watches, "policy")
        self.watches.start(jupyter_runtime_dir())
        if self.role == "central":
            self._monitor_task = asyncio.ensure_future(self._monitor_loop())
        if self.replicas is not None:
            await self.replicas.start()
        return port

    async def start_serving(self) -> None:
        """The model server: its own port and app, its workers sandboxed like the checks."""
        from .serving.handlers import routes
        from .serving.server import ModelServer, log_served

        limits = Limits(
            memory=self.serving.worker_memory_limit,
            file_size=self.sandbox_max_file_size,
            processes=self.sandbox_max_processes,
        )
        self.model_server = ModelServer(
            self.serving,
            self.registry,
            self.store,
            self.model_sandbox,
            limits,
            lambda: self.trusted_types,
            self.call,
            self.run_io,
        )
        self.model_server.replica = self.instance_id  # its rows of serving_stats
        self.model_server.tick_hooks = self.serving_tick_hooks
        if self.validation is not None:  # ONNX where the recorded conversion has parity
            self.model_server.choose_backend = self.validation.choose_backend
            self.validation.server = self.model_server
        app = web.Application(
            routes(),
            agent=self,
            model_server=self.model_server,
            default_handler_class=NotFoundHandler,
            xsrf_cookies=False,
            log_function=log_served,
        )
        self.serving_url = await self.model_server.start(app)
        log.info("Model server listening on %s", self.serving_url)

    async def _retain(self, model: str, number: int, verdict: str) -> None:
        """``keep_versions``: a verdict may have let an older version's bundle go."""
        try:
            await self.pools.call(self.retention.prune, model, self.keep_versions, "retention")
        except Exception:  # the bundles stay; the next verdict tries again
            log.exception("retention of %s failed", model)

    async def serving_changed(self) -> None:
        """Slots changed here: apply them now rather than at the next poll."""
        if self.model_server is not None:
            await self.model_server.refresh()

    async def monitor_run(self, model: str | None, now: float | None = None) -> dict:
        """Evaluate closed windows (one model, or all); publish each alert change as an SSE
        event (its webhook notice was kept with it); apply a rollback to serving now."""
        if self.model_server is not None:
            await self.model_server.log.flush()
        # On the I/O pool, not the store's writer thread: a large window takes seconds, and
        # pushes and sign-offs must not wait behind it (its few writes take their own locks).
        if model is None:
            results = await self.run_io(self.monitor.run_all, now)
        else:
            results = [await self.run_io(self.monitor.run, model, now)]
        from .monitor.service import alert_notice

        for result in results:
            for alert in result["alerts"]:  # its notice committed with it (MonitorService)
                self.events.publish("alert", **alert_notice(alert))
            if result["rolled_back"]:
                self.events.publish("stage", model=result["model"], by="monitor", stage="rollback")
                await self.serving_changed()
        return results[0] if model is not None else {"models": results}

    async def central_alerts(self, model: str) -> list[dict]:
        """Central's firing alerts of ``model``, asked with this agent's central token."""
        from .handlers.relay import ask_central

        path = f"/api/v1/models/{model}/alerts?state=firing"
        return (await ask_central(self, "GET", path))["alerts"]

    def _warn_of_an_unused_webhook(self) -> None:
        """A WebhookDestination url set while forward_to lacks 'webhook' sends nothing, and
        says nothing: one warning at start, naming what to add. Not enabled implicitly:
        forward_to also names where a local agent's passing versions are delivered."""
        section = self.config.get("WebhookDestination") or {}
        if not section.get("url") or "webhook" in self.forward_to:
            return
        wanted = [*self.forward_to, "webhook"]
        log.warning(
            "c.WebhookDestination.url is set but 'webhook' is not in c.HandoffAgent.forward_to "
            "(%s): no webhook notice or delivery will be sent. To send them, set "
            "c.HandoffAgent.forward_to = %r (or pass %s)",
            list(self.forward_to),
            wanted,
            " ".join(f"--forward-to {d}" for d in wanted),
        )

    def _webhooks(self) -> list:
        """The webhook destinations notices go to: allowlisted URL, with a secret."""
        out = []
        for d in self.destinations.values():
            allowed = getattr(d, "allowed_urls", None)
            if allowed is not None and d.url in allowed and d.secret:
                out.append(d)
        return out

    def _noticed(self, event: dict) -> None:
        """A change here that may have kept a notice in its transaction (a stage, an alert,
        a guardrail rollback, a watch's trigger) was committed: the notices loop sends it
        now, not at its next poll."""
        if event["type"] in NOTICED:
            self.notices.wake()

    def _keep_notice(self, kind: str, event: dict) -> None:
        """In the transaction of the change that owes it (a version now waits for sign-offs,
        for trust, or again after a withdrawal): its notice for the webhooks (chat,
        ticketing), with where to look, as a path the sender completes with its own URL."""
        url = f"/api/v1/models/{event['model']}/versions/{event['version']}"
        self.notices.keep(kind, {**event, "url": url})

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self.monitor.settings.every_seconds)
            try:
                await self.monitor_run(None)
            except asyncio.CancelledError:
                raise
            except Exception:  # the next round tries again
                failed_round(log, "the monitor run failed")

    def _lifecycle(self) -> dict:
        """``agent.start``/``agent.stop``'s payload; central's names its signing key, so a key
        made anew (its file lost, or left out of a restore) shows in the audit log."""
        out = {"role": self.role, "agent_id": self.agent_id, "pid": os.getpid()}
        if self.signing_key is not None:
            out["signing_key"] = keys.key_id(self.signing_key.public_key())
        if self.policy is not None:  # a sign-off rule changed between starts shows here
            out["signoffs_needed"] = self.policy.stages
        return out

    async def _warn_of_other_keys(self) -> None:
        """Replicas that each made their own key sign dossiers a verifier with one key half
        refuses (behind a load balancer, either replica signs)."""
        ours = keys.key_id(self.signing_key.public_key())
        week_ago = datetime.fromtimestamp(time.time() - 7 * 86400, UTC).isoformat()
        seen = await self.call(self.registry.signing_keys, week_ago)
        others = sorted({k for a, k in seen.items() if a != self.agent_id and k != ours})
        if others:
            log.warning(
                "other central replicas on this database signed dossiers with key(s) %s, this "
                "one signs with %s: a dossier verifies only against its signer's key. Give "
                "every replica one key file (c.HandoffAgent.signing_key_file), then restart them",
                ", ".join(others),
                ours,
            )

    def _bound_port(self) -> int:
        for sock in self.server._sockets.values():
            return sock.getsockname()[1]
        raise RuntimeError("the agent is not listening")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        await self.trust_flow.stop_watch()
        await self.watches.stop()
        if self.validation is not None:
            await self.validation.stop()
        if getattr(self, "_monitor_task", None) is not None:
            self._monitor_task.cancel()
        if self.replicas is not None:
            await self.replicas.stop()
        if self.model_server is not None:
            await self.model_server.stop()
        await self.check_flow.stop_keeping()
        await self.check_flow.settle()
        if self.runner is not None:
            await self.runner.close()
        await self.probe_pool.close()
        await self.declared_settings.close()
        await self.forwarding.stop()
        self.notices.stop()
        self.ingest.cancel_follows()  # a kernel still writing would hold the stop up
        self.pools.shutdown()
        if self.server is not None:  # started: its agent.start gets its agent.stop
            self._db.submit(self.registry.lifecycle_stop, self._lifecycle()).result()
        self._db.submit(self.registry.close).result()
        self._db.shutdown(wait=True)
