"""The whole plugin API, in one place: checks, destinations, deployers and monitors.

Every kind is a Protocol with a small context object, and one entry point group::

    check        handoff_agent.checks      run(ctx: CheckContext) in a sandboxed worker
    destination  handoff_agent.forwarders  body(ctx: DestinationContext, delivery), deliver()
    deployer     handoff_agent.deployers   deploy(ctx: DeployContext)    (declared: serving)
    monitor      handoff_agent.monitors    observe(ctx: MonitorContext)  (declared: monitoring)

Plugins are ``module:attr`` strings, imported only when used (a check only in its worker, so the
agent never imports one). ``PluginRegistry.register`` is the one way in: the built-ins
(``BUILTINS``) go through it exactly like a third party's entry points and like what a test
registers. A broken plugin is a warning, never a crash; an unknown name lists the registered
ones. Every hook takes keyword-only extras (``**kwargs``) so the interface can grow.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from .store.blobs import BlobWriter
from .vocabulary import CHECK_STATUSES

log = logging.getLogger("handoff_agent")

STATUSES = CHECK_STATUSES  # what a check may return (re-exported for plugin authors)

GROUPS = {
    "check": "handoff_agent.checks",
    "destination": "handoff_agent.forwarders",
    "deployer": "handoff_agent.deployers",
    "monitor": "handoff_agent.monitors",
}

# The built-ins, registered through ``PluginRegistry.register`` like anyone else's.
BUILTINS: dict[str, dict[str, str]] = {
    "check": {
        "loads": "handoff_agent.checks.loads:LoadsCheck",
        "smoke": "handoff_agent.checks.smoke:SmokeCheck",
        "schema": "handoff_agent.checks.schema:SchemaCheck",
        "performance": "handoff_agent.checks.performance:PerformanceCheck",
        "latency": "handoff_agent.checks.latency:LatencyCheck",
        "fairness": "handoff_agent.checks.fairness:FairnessCheck",
        "explainability": "handoff_agent.checks.explainability:ExplainabilityCheck",
        "drift": "handoff_agent.checks.drift:DriftCheck",
    },
    "destination": {
        "central": "handoff_agent.forwarding.central:CentralDestination",
        "webhook": "handoff_agent.forwarding.webhook:WebhookDestination",
        "mlflow": "handoff_agent.forwarding.mlflow:MLflowDestination",
    },
    "deployer": {},
    "monitor": {},
}


# == checks ===================================================================================


@dataclass
class CheckContext:
    """What a check receives, in its worker. Fields it does not need may be ``None``."""

    model: Any
    manifest: dict
    X: Any = None  # pandas.DataFrame; a Series of strings when ``input_kind`` is "text"
    y: Any = None  # pandas.Series: the evaluation target
    sensitive: Any = None  # pandas.DataFrame: sensitive columns, row-aligned with X
    reference_X: Any = None  # pandas.DataFrame: reference or training sample
    reference_y: Any = None
    champion: Any = None  # the champion's model, when there is one and the check compares
    champion_manifest: dict | None = None
    previous_manifest: dict | None = None  # the version pushed just before this one
    config: dict = field(default_factory=dict)  # this check's settings, defaults merged
    task: str | None = None  # "classification" | "regression" | None when unknown

    @property
    def input_kind(self) -> str:
        return input_kind(self.manifest)

    def as_input(self, X):
        """Rows of ``X`` (or ``reference_X``) in the form the model was fitted on: what to pass
        to ``predict``. Checks slice pandas (``X.iloc[...]``), then call this."""
        return as_input(X, self.input_kind)


def input_kind(manifest: dict | None) -> str:
    """How the model takes its input: "table" (a DataFrame), "array" (a 2-D numpy array,
    no column names) or "text" (1-D strings, e.g. a Tfidf pipeline)."""
    return ((manifest or {}).get("signature") or {}).get("input") or "table"


def as_input(X, kind: str):
    """A frame of the signature's columns in the form a model of ``kind`` was fitted on (the
    checks' and the model server's one rule: a text pipeline given the frame itself would
    read its column names as the documents)."""
    if kind == "array" and hasattr(X, "to_numpy"):
        return X.to_numpy()
    if kind == "text" and getattr(X, "ndim", 1) == 2:
        return X.iloc[:, 0]
    return X


@dataclass
class CheckResult:
    """What a check returns. Everything in it must be JSON-serialisable."""

    status: str
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)  # name -> base64 PNG

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")

    def to_json(self) -> dict:
        return asdict(self)


@runtime_checkable
class Check(Protocol):
    """A check plugin. ``run`` executes inside a sandboxed worker subprocess, never in the
    agent, so it may unpickle, import sklearn and use what the worker's limits allow."""

    name: str  # unique, matches the registered name
    title: str  # one line, shown to people
    needs: tuple[str, ...]  # CheckContext fields that must be present, e.g. ("X", "y")
    # Settings and thresholds, overridable by config and per push. When declared, they are
    # the whole list: another setting, or a value not of its default's type, makes the
    # check an error that says so (an empty dict takes anything).
    defaults: dict

    def run(self, ctx: CheckContext, **kwargs) -> CheckResult:
        """Run the check. Raise nothing for a bad model: return status "fail" with a message."""
        ...


def compares_champion(check) -> bool:
    """Whether a check reads ``ctx.champion``: its optional ``compares_champion`` attribute,
    True when absent. A worker loads the champion only for a check that compares; the
    others get ``champion=None`` (the conformance kit checks they give the same result)."""
    return bool(getattr(check, "compares_champion", True))


# == destinations =============================================================================


class NotReady(Exception):
    """The destination cannot take deliveries yet (e.g. not running). Retried with backoff."""


class ForwardError(Exception):
    """A delivery that cannot be built; it goes to dead-letter with this message."""


@dataclass
class Delivery:
    delivery_id: str
    destination: str
    model: str
    number: int
    digest: str  # the version's bundle
    body: BinaryIO | None = None  # the stored body, a verified read-only file, per attempt
    attempt: int = 0
    version: dict = field(default_factory=dict)


@dataclass
class Result:
    ok: bool
    retryable: bool = True
    retry_after: float | None = None
    remote: dict = field(default_factory=dict)
    error: str = ""
    code: str = ""  # the destination's error code, when it gave one


@dataclass
class DestinationContext:
    """What a destination gets from the agent: these services, not the agent. ``body`` gets
    it as ``ctx``, and so does ``deliver`` (as the keyword ``ctx=``).

    The callables up to ``run_io`` are coroutine functions run off the event loop by the
    agent; the rest are for ``deliver``, which runs in a thread."""

    agent_id: str  # this agent's stable id (``<home>/agent-id``)
    url: str  # this agent's base URL, for links in a body
    # A verified, read-only local copy of a blob (close it: ``with await ...``); else
    # ForwardError (damaged) or NotReady (the store cannot be reached). Never the store's path.
    verified_blob: Callable[[str], Awaitable[BinaryIO]]
    report_digest: Callable[[str, int, str], Awaitable[str | None]]  # (model, number, kind)
    convert_to_skops: Callable[[str], Awaitable[str]]  # a pickle bundle -> skops bundle digest
    audit_since_ack: Callable[[str], Awaitable[list[dict]]]  # audit rows since dest's last ack
    blob_writer: Callable[[], BlobWriter]  # a new blob to write; return it from ``body``
    run_io: Callable[..., Awaitable[Any]]  # run a blocking function in the I/O pool
    # A verified read-only local copy of a blob, blocking (close it); BlobError when damaged.
    local_copy: Callable[[str], BinaryIO] | None = None
    sandbox: Any = None  # the agent's sandbox (``sandbox.Sandbox``): where model code runs
    limits: Any = None  # ``sandbox.Limits`` for a worker that handles a whole bundle


@runtime_checkable
class Destination(Protocol):
    """A destination plugin: a class, constructed once with ``config=`` (the agent's), never
    with the agent as its parent: what it may use of the agent comes in its context."""

    name: str

    async def body(
        self, ctx: DestinationContext, delivery: Delivery, **kwargs
    ) -> bytes | BinaryIO | BlobWriter:
        """What to send: bytes, a binary file read from its start, or ``ctx.blob_writer()``
        written; stored once as a blob and sent again on retries."""
        ...

    def deliver(self, delivery: Delivery, **kwargs) -> Result:
        """One attempt. Runs in a thread, given ``ctx=`` (a DestinationContext). Never
        raises for a refusal: return a Result."""
        ...


@runtime_checkable
class StageSource(Protocol):
    """A destination that runs its own stages (central does): the agent mirrors them back onto
    the versions it delivered there, every ``status_interval`` seconds."""

    name: str
    status_interval: float

    def status(self, remote: dict, **kwargs) -> dict | None:
        """The remote view of a delivered version (its ``remote`` record), or None when it
        cannot be reached. Runs in a thread."""
        ...


# == deployers (serving) ======================================================================


@dataclass
class DeployContext:
    """What a deployer gets: one approved version and where to read its bundle."""

    model: str
    number: int
    digest: str
    manifest: dict
    stage: str | None
    open_bundle: Callable[[], Awaitable[Path]]  # a verified copy of the bundle
    config: dict = field(default_factory=dict)  # this deployer's settings


@runtime_checkable
class Deployer(Protocol):
    """Serves a version somewhere (a process, a container, a platform). Declared for serving."""

    name: str

    async def deploy(self, ctx: DeployContext, **kwargs) -> dict:
        """Start serving ``ctx``'s version; return where (e.g. ``{"url": …}``)."""
        ...

    async def undeploy(self, ctx: DeployContext, **kwargs) -> None:
        """Stop serving it."""
        ...


# == monitors (monitoring) ====================================================================


@dataclass
class MonitorContext:
    """What a monitor gets: the served version, its reference sample and a way to report."""

    model: str
    number: int
    manifest: dict
    reference: Callable[[], Awaitable[Path | None]]  # the pushed reference sample, if any
    publish: Callable[..., None]  # emit an event on the agent's bus (type, **fields)
    config: dict = field(default_factory=dict)


@runtime_checkable
class Monitor(Protocol):
    """Watches a served version (drift, errors, latency). Declared for monitoring."""

    name: str

    async def observe(self, ctx: MonitorContext, rows: Any, **kwargs) -> dict:
        """Look at a batch of served rows; return metrics (JSON)."""
        ...


PROTOCOLS = {"check": Check, "destination": Destination, "deployer": Deployer, "monitor": Monitor}


# == the registry =============================================================================


class UnknownPlugin(LookupError):
    """No plugin of that kind is registered under that name."""


class PluginRegistry:
    """Plugins by kind and name, as ``module:attr`` strings (or objects, from tests)."""

    def __init__(self):
        self._plugins: dict[str, dict[str, Any]] = {kind: {} for kind in GROUPS}

    def register(self, kind: str, name: str, target: Any, *, replace: bool = False) -> None:
        """Register ``target`` (``module:attr``, a class or an instance) as ``kind`` ``name``.
        A name taken already keeps its first owner, with a warning, unless ``replace``."""
        if kind not in GROUPS:
            raise ValueError(f"unknown plugin kind {kind!r}; kinds are {sorted(GROUPS)}")
        found = self._plugins[kind]
        if name in found and not replace:
            if found[name] != target:
                log.warning("%s %r is registered twice; keeping %s", kind, name, found[name])
            return
        found[name] = target

    def unregister(self, kind: str, name: str) -> None:
        self._plugins[kind].pop(name, None)

    def names(self, kind: str) -> list[str]:
        return sorted(self._plugins[kind])

    def specs(self, kind: str) -> dict[str, str]:
        """name -> ``module:attr`` for the plugins registered as strings (what a worker
        imports; the agent itself never does)."""
        return {n: t for n, t in self._plugins[kind].items() if isinstance(t, str)}

    def load(self, kind: str, name: str) -> Any:
        """The plugin's object. ``UnknownPlugin`` names the registered ones."""
        if name not in self._plugins[kind]:
            raise UnknownPlugin(f"no {kind} named {name!r}; registered: {self.names(kind)}")
        target = self._plugins[kind][name]
        return resolve(target) if isinstance(target, str) else target

    def load_all(self, kind: str, names: list[str] | None = None) -> dict[str, Any]:
        """The named plugins (default: all) that load; each failure is a warning."""
        out = {}
        for name in self.names(kind) if names is None else names:
            try:
                out[name] = self.load(kind, name)
            except UnknownPlugin as e:
                log.warning("%s", e)
            except Exception as e:  # a third party's import error must not stop the agent
                log.warning("%s plugin %r failed to load: %s", kind, name, e)
        return out

    def add_builtins(self) -> PluginRegistry:
        for kind, found in BUILTINS.items():
            for name, target in found.items():
                self.register(kind, name, target)
        return self

    def add_entry_points(self, entry_points: Callable | None = None) -> PluginRegistry:
        """Everything installed in the four entry point groups. Only outside tests."""
        for kind, group in GROUPS.items():
            found = entry_points(group=group) if entry_points else _installed()[group]
            for ep in found:
                self.register(kind, ep.name, ep.value)
        return self

    def add(self, plugins: dict[str, dict[str, Any]]) -> PluginRegistry:
        """Register ``{kind: {name: target}}`` (``c.HandoffAgent.plugins``)."""
        for kind, found in plugins.items():
            for name, target in found.items():
                self.register(kind, name, target, replace=True)
        return self


@functools.cache
def _installed() -> dict[str, tuple]:
    """The four groups' entry points, read once per process: each read scans every installed
    distribution's metadata (~20 ms), and a command builds its registry more than once."""
    from importlib.metadata import entry_points

    installed = entry_points()
    return {group: tuple(installed.select(group=group)) for group in GROUPS.values()}


def resolve(spec: str) -> Any:
    """Import ``module:attr``."""
    module, _, attr = spec.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def default_registry(entry_points: bool = True, extra: dict | None = None) -> PluginRegistry:
    """The built-ins, then installed entry points (unless ``entry_points`` is False), then
    ``extra`` (``{kind: {name: "module:attr"}}``), which may replace a name."""
    reg = PluginRegistry().add_builtins()
    if entry_points:
        reg.add_entry_points()
    return reg.add(extra or {})


@contextmanager
def registered(registry: PluginRegistry, kind: str, name: str, target: Any) -> Iterator[None]:
    """Register a plugin for the duration of a ``with`` block (for tests)."""
    before = registry._plugins[kind].get(name)
    registry.register(kind, name, target, replace=True)
    try:
        yield
    finally:
        if before is None:
            registry.unregister(kind, name)
        else:
            registry.register(kind, name, before, replace=True)
