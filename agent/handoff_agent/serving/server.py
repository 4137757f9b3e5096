"""``ModelServer``: the central agent's model server, on its own port (``c.Serving.port``).

It reads which version serves in which slot from the MetadataStore (so replicas agree),
keeps a pool of sandboxed workers per version, and routes each request. A change of slots
is applied only once the new versions' workers are up: until then the previous routing
keeps answering, so a promotion or rollback under load loses no request. Pools no longer
referenced are drained, then stopped.

Each request updates this process's ``StatsBook`` (latency, errors, predicted classes and
scores; shadow answers are compared with the ones sent). Every tick joins the feedback labels
of the requests served here, adds the book into this replica's ``serving_stats`` rows, and
calls the tick hooks (the guardrails, which read every replica's rows merged). Central's load
test (``protocols.LOAD_TEST_HEADER``) is served but counted nowhere: not in the book, the
prediction log or the feedback join. A canary's failed request wakes the next tick early (at
most every ``EARLY_TICK``): an error-rate alarm is judged at once rather than up to
``c.Serving.tick_seconds`` later.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import math
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from tornado import httpserver, web

from ..errors import HandoffError, NotFound, Unavailable
from ..http_server import HEADER_TIMEOUT, BoundedHTTPServer
from ..outage import failed_round
from ..vocabulary import MODEL_REFUSED
from .backend import BACKENDS
from .inputs import signature_columns, validate
from .pool import WorkerPool, WorkerUnavailable
from .predlog import PredictionLog
from .routing import SPLIT_SLOTS, Endpoint, Route, endpoints_from
from .stats import StatsBook

log = logging.getLogger("handoff_agent")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class PredictFailed(HandoffError):
    status, code = 422, "predict_failed"


class ModelOutOfMemory(PredictFailed):
    """The worker's memory ran out on this request: counted against the model (a canary
    that needs more than production is a worse model), told as what to send instead."""

    status, code = 413, "model_out_of_memory"


def not_finite(predict) -> int:
    """Rows a regressor answered NaN or infinity for: JSON shows them as null, so they are
    counted as the model's errors, where the guardrails see them."""
    return sum(1 for x in predict or () if isinstance(x, float) and not math.isfinite(x))


SLICE_SECONDS = 5.0  # the stats' time slices; every replica must use the same
STATS_RETENTION = 86_400.0  # seconds of stored stats (a bake or step longer than it is cut)
PRUNE_TICKS = 60  # stored stats older than the retention are dropped every this many ticks
EARLY_TICK = 0.2  # seconds between ticks at least, when failed canary requests wake them
RECENT_REQUESTS = 100_000  # served requests remembered for joining feedback labels
MISS_REFRESH = 0.05  # seconds: a request with no route reads the slot table at most this often
LOADING = "loading"  # an Endpoint.down reason: its workers start


def predictions_of(outputs: dict) -> tuple[list, list]:
    """(classes, scores) per row from a worker's outputs: a classifier's predicted classes
    and its positive-class probability (binary) or top probability (multiclass); a
    regressor's outputs are neither (floats), so only latency and errors are kept."""
    predict = outputs.get("predict") or []
    proba = outputs.get("predict_proba")
    if proba:
        scores = [
            (row[1] if len(row) == 2 else max(row)) if isinstance(row, list) and row else None
            for row in proba
        ]
        return predict, [x for x in scores if isinstance(x, int | float)]
    if predict and not isinstance(predict[0], float):
        return predict, []
    return [], []


@dataclass
class Served:
    model: str
    number: int
    slot: str
    request_id: str
    outputs: dict


class ModelServer:
    """``call`` runs a MetadataStore method on the agent's store thread, ``run_io`` a
    blocking call off the loop; ``trusted`` returns central's current trust list."""

    def __init__(self, settings, registry, store, sandbox, limits, trusted: Callable, call, run_io):
        self.settings, self.registry, self.store = settings, registry, store
        self.sandbox, self.limits, self.trusted = sandbox, limits, trusted
        self.call, self.run_io = call, run_io
        self.endpoints: dict[str, Endpoint] = {}
        self.pools: dict[tuple[str, int], WorkerPool] = {}
        self.manifests: dict[tuple[str, int], dict] = {}
        # This process's traffic counters since the last tick; each tick adds them into this
        # replica's rows of serving_stats, which readers merge across replicas.
        self.book = StatsBook(window_seconds=3600.0, slice_seconds=SLICE_SECONDS)
        self.replica = uuid.uuid4().hex[:16]  # the agent sets its instance id
        self.recent: collections.OrderedDict = collections.OrderedDict()  # request id → served
        self._feedback_after: int | None = None
        self.tick = 0  # ticks so far: a guardrail decision names the tick that made it
        self._wake = asyncio.Event()  # set by a canary's failed request: tick early
        self._last_tick = 0.0
        self.log = PredictionLog(registry, store, call, run_io, settings)
        # Guardrails plug in here: each is called with this server every tick, after the
        # tick's stats are stored (so a decision sees every request answered before it).
        self.tick_hooks: list[Callable] = []
        # Which backend serves a version: (model, number, manifest) -> a BACKENDS name, or
        # (name, {job key: blob digest}) for a backend that needs more blobs than the bundle
        # (e.g. a converted ONNX file); each reaches the worker as an open file, by that key.
        # It may be a coroutine function (central's reads the recorded conversion).
        self.choose_backend: Callable[[str, int, dict], str | tuple] = lambda m, n, man: "skops"
        self.token_cache: dict[str, tuple[dict, float]] = {}  # handlers.ServingHandler
        self._refreshing = asyncio.Lock()
        self._loading: set[str] = set()  # models with no route yet: their versions load
        self._waiting: set[tuple[str, int]] = set()  # versions in a slot, still loading
        self._split_loading: set[str] = set()  # models whose production/canary still loads
        self._missed_at = 0.0  # when a request that found no route last read the slot table
        self.load_errors: dict[tuple[str, int], str] = {}  # versions that cannot load: why
        self.resting: set[tuple[str, int]] = set()  # test slots past max_test_slots: unloaded
        self._state = None
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self.http: httpserver.HTTPServer | None = None
        self.url = ""

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, app: web.Application) -> str:
        self.http = BoundedHTTPServer(
            app, max_body_size=self.settings.max_body_bytes + 1, body_timeout=HEADER_TIMEOUT
        )
        sockets = _bind(self.settings.ip, self.settings.port)
        self.http.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        host = f"[{self.settings.ip}]" if ":" in self.settings.ip else self.settings.ip
        self.url = f"http://{host}:{port}"
        self.log.start()
        self._in_background(self.refresh())
        self._tasks = [
            asyncio.ensure_future(self._poll()),
            asyncio.ensure_future(self._ticks()),
        ]
        return self.url

    async def stop(self) -> None:
        if self.http is not None:
            self.http.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(p.close(drain=2.0) for p in self.pools.values()))
        self.pools.clear()
        await self.log.close()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                failed_round(log, "reading the slot table failed")

    async def _ticks(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.tick_seconds)
            if self._wake.is_set():  # a canary failed a request: judge it now, not later
                self._wake.clear()
                await asyncio.sleep(max(0.0, self._last_tick + EARLY_TICK - time.monotonic()))
            self._last_tick = time.monotonic()
            self.tick += 1
            try:
                await self.store_stats()
            except asyncio.CancelledError:
                raise
            except Exception:
                failed_round(log, "storing the serving stats failed")
            for hook in list(self.tick_hooks):
                try:
                    out = hook(self)
                    if inspect.isawaitable(out):
                        await out
                except asyncio.CancelledError:
                    raise
                except Exception:
                    failed_round(log, "a serving tick hook failed")

    def served(self, model: str, request_id: str) -> tuple | None:
        """(model, number, slot, predictions) of a request this replica answered for
        ``model`` lately; None when another replica did, or it is forgotten."""
        hit = self.recent.get(request_id)
        return hit if hit is not None and hit[0] == model else None

    async def store_stats(self) -> None:
        """Join the labels that arrived since the last tick to the requests served here,
        then add this tick's counters into this replica's rows."""
        if self._feedback_after is None:
            self._feedback_after = await self.call(self.registry.feedback_last_id)
        labels = await self.call(self.registry.feedback_since, self._feedback_after)
        now = time.time()
        for row in labels:
            self._feedback_after = row["id"]
            served = self.served(row["model"], row["request_id"])
            if served is None:
                continue  # served by another replica (which joins it), or forgotten
            model, number, slot, predicted = served
            label, predicted = row["label"], predicted or []
            pairs = (
                zip(predicted, label, strict=True)
                if isinstance(label, list) and len(label) == len(predicted)
                else [(predicted[0], label)]
                if len(predicted) == 1
                else []
            )
            stats = self.book.get(model, number, slot)
            for p, y in pairs:
                stats.record_label(now, p, y)
        slices = self.book.drain_slices()
        prune = self.tick % PRUNE_TICKS == 1
        if slices or prune:
            keep = int((now - STATS_RETENTION) // SLICE_SECONDS) if prune else None
            await self.call(self.registry.serving_stats_add, self.replica, slices, keep)

    # -- slots → pools → routing ----------------------------------------------------------

    async def refresh(self) -> None:
        """Bring the routing to the slot table without waiting for any load: start the pools
        of new versions and route at once. A slot whose new version is still loading keeps
        the version it had (or waits, answered 503 while its model has no other); it takes
        the new one when its pool settles, or at the latest at the next poll. So a rollback
        or a traffic change is routed in the moment, whatever else is loading."""
        async with self._refreshing:
            state = await self.call(self.registry.slot_state)
            if state == self._state and not self._waiting:
                return
            rows = await self.call(self.registry.slots_of)
            rows, self.resting = _bounded(rows, self.settings.max_test_slots)
            desired = endpoints_from(rows)
            for r in rows:
                key = (r["model"], int(r["number"]))
                if key not in self.pools:
                    pool = self.pools[key] = await self._start_pool(*key, r["digest"])
                    self._in_background(self._route_when_settled(pool))
            self._route(desired, state)

    async def _route_when_settled(self, pool: WorkerPool) -> None:
        await pool.wait_settled(self.settings.load_timeout)
        await self.refresh()

    def _route(self, desired: dict[str, Endpoint], state) -> None:
        """Route ``desired``: a version that cannot load gets no traffic; one still loading
        leaves its slot to the version routed there before, if that one is up."""
        self.load_errors, waiting, loading, split_loading = {}, set(), set(), set()
        for ep in desired.values():
            before = self.endpoints.get(ep.model)
            if ep.pick() is not None and not any(
                self._up(ep.model, r.number) for s, r in ep.routes.items() if s in SPLIT_SLOTS
            ):
                split_loading.add(ep.model)  # routed requests wait (503) for its pool
            for slot, route in list(ep.routes.items()):
                pool = self.pools.get((ep.model, route.number))
                if pool is not None and pool.error is not None:
                    self.load_errors[(ep.model, route.number)] = pool.error
                    ep.down[slot] = (route.number, pool.error)
                    del ep.routes[slot]
                elif pool is None or not pool.ready:
                    waiting.add((ep.model, route.number))
                    held = before.routes.get(slot) if before is not None else None
                    if held is not None and self._up(ep.model, held.number):
                        ep.routes[slot] = held
                    else:
                        ep.down[slot] = (route.number, LOADING)
                        del ep.routes[slot]
            if not ep.routes and any(m == ep.model for m, _ in waiting):
                loading.add(ep.model)
        self.endpoints, self._state = desired, state
        self._waiting, self._loading = waiting, loading
        self._split_loading = {m for m in split_loading if self.endpoints[m].pick() is None}
        keep = {(ep.model, n) for ep in desired.values() for n in ep.versions()} | waiting
        for key in [k for k in self.pools if k not in keep]:
            self._in_background(self.pools.pop(key).close())

    def _up(self, model: str, number: int) -> bool:
        pool = self.pools.get((model, number))
        return pool is not None and pool.ready

    def _in_background(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _start_pool(self, model: str, number: int, digest: str) -> WorkerPool:
        manifest = await self.call(self.registry.manifest_of, model, number) or {}
        self.manifests[(model, number)] = manifest
        backend = self.choose_backend(model, number, manifest)
        if inspect.isawaitable(backend):
            backend = await backend
        backend, blobs = backend if isinstance(backend, tuple) else (backend, {})
        blobs = {"bundle": digest, **blobs}
        entry = BACKENDS.get(backend)
        job = {
            **dict.fromkeys(blobs, ""),
            "channel": "",
            "backend": backend,
            "backend_entry": entry if isinstance(entry, str) else None,
            "trusted_types": list(self.trusted()),
        }

        async def spawn(channel: socket.socket):
            handle = await self.sandbox.spawn("handoff_agent.serving.worker", self.limits)
            try:
                with contextlib.ExitStack() as copies:
                    files = {}
                    for key, blob in blobs.items():  # verified temporary copies, never paths
                        files[key] = copies.enter_context(
                            await self.run_io(self.store.local_copy, blob)
                        )
                    await handle.send(job, {**files, "channel": channel})
            except BaseException:
                await handle.stop()
                raise
            return handle

        return WorkerPool(
            f"{model}:{number}",
            spawn,
            self.settings.workers,
            self.settings.load_timeout,
            self.settings.request_timeout,
        )

    async def reload(self, model: str, number: int) -> str | None:
        """Load a served version again with the backend ``choose_backend`` names now (after
        its conversion): the new workers take its requests once up, then the old ones drain.
        If they cannot load, the old ones keep serving. Returns the backend serving it, or
        None when the version is not loaded here."""
        async with self._refreshing:
            old = self.pools.get((model, number))
            if old is None:
                return None
            rows = await self.call(self.registry.slots_of, model)
            digest = next((r["digest"] for r in rows if int(r["number"]) == number), None)
            if digest is None:
                return old.info.get("backend")
            fresh = await self._start_pool(model, number, digest)
            await fresh.wait_settled(self.settings.load_timeout)
            if not fresh.ready:
                log.warning("%s:%s did not load again (%s)", model, number, fresh.error)
                self._in_background(fresh.close())
                return old.info.get("backend")
            self.pools[(model, number)] = fresh
            self._in_background(old.close())
            return fresh.info.get("backend")

    def adopt(self, model: str, number: int, backend: str | None) -> None:
        """A replica validated a version on ``backend``: if this one serves it on another,
        load it again here (``reload`` reads the recorded conversion)."""
        pool = self.pools.get((model, number))
        if backend and pool is not None and pool.info.get("backend") != backend:
            self._in_background(self.reload(model, number))

    # -- requests -------------------------------------------------------------------------

    def endpoint(self, model: str) -> Endpoint:
        ep = self.endpoints.get(model)
        if self._state is None:  # the slot table not read yet: starting, not "not served"
            raise Unavailable("The model server is starting.", "Retry in a moment.")
        if (ep is None or not ep.routes) and model in self._loading:  # its workers start
            raise Unavailable(
                f"Model {model!r} is loading.", "Retry in a moment: its workers are starting."
            )
        failed = [(n, why) for (m, n), why in self.load_errors.items() if m == model]
        if (ep is None or not ep.routes) and failed:
            raise Unavailable(  # not a moment's fault: the admin must act (the deployment view)
                f"{model}:{failed[0][0]} cannot load: {failed[0][1]}",
                "`jupyter handoff deployment NAME` shows it.",
            )
        if ep is None or not ep.routes:
            raise NotFound(
                f"Model {model!r} is not served here.",
                "A version is served once it is validated (test slot), canary or production.",
                code="model_not_served",
            )
        return ep

    def route_for(self, model: str, number: int | None, key: str | None) -> Route:
        ep = self.endpoints.get(model)
        asked = ep.slot_of(number) if ep is not None and number is not None else None
        if number is not None and asked is None and (model, number) in self._waiting:
            raise Unavailable(f"{model}:{number} is loading.", "Retry in a moment.")
        if number is not None and (model, number) in self.resting:
            raise Unavailable(
                f"{model}:{number}'s test slot is not loaded: central keeps the "
                f"{self.settings.max_test_slots} newest test slots loaded.",
                "An admin raises c.Serving.max_test_slots, or the version moves on.",
            )
        ep = self.endpoint(model)
        if number is not None:
            slot = ep.slot_of(number)
            if slot is None:
                served = ", ".join(str(n) for n in sorted(ep.versions()))
                raise NotFound(
                    f"Version {number} of {model!r} is not served.",
                    f"Served versions: {served}.",
                    code="version_not_served",
                )
            return ep.routes[slot]
        route = ep.pick(key)
        if route is None and "production" in ep.down:  # its share waits; the canary keeps its own
            down, why = ep.down["production"]
            if why == LOADING:
                raise Unavailable(f"{model}:{down} (production) is loading.", "Retry in a moment.")
            raise Unavailable(
                f"{model}:{down} (production) cannot load: {why}",
                "`jupyter handoff deployment NAME` shows it; the canary keeps only its share.",
            )
        if route is None and model in self._split_loading:  # promoted: its pool is starting
            raise Unavailable(f"{model!r}: its newly deployed version loads.", "Retry in a moment.")
        if route is None:
            served = ", ".join(str(n) for n in sorted(ep.versions()))
            raise NotFound(
                f"{model!r} has no production or canary version to route to; it serves "
                f"only by version ({served}).",
                f"Call /v2/models/{model}/versions/N/infer.",
                code="no_default_version",
            )
        return route

    def signature(self, model: str, number: int) -> list[dict]:
        return signature_columns(self.manifests.get((model, number)) or {})

    async def infer(
        self, model: str, number: int | None, decode, key=None, request_id=None, load_test=False
    ):
        """Route, decode (``decode(expected_columns)`` → columns), validate, predict, log.
        The shadow, if any, gets the same columns after the answer is decided. A
        ``load_test`` request is answered alike but is nobody's traffic: no stats, no log,
        no feedback join, no shadow copy (its numbers are the load test's own)."""
        try:
            route = self.route_for(model, number, key)
        except NotFound:  # the slot table may have moved since the last poll: look now
            if not await self._refreshed_on_miss():
                raise
            route = self.route_for(model, number, key)
        ep = self.endpoint(model)  # held: the model may leave serving while it predicts
        request_id = request_id if request_id and REQUEST_ID.fullmatch(request_id) else None
        request_id = request_id or uuid.uuid4().hex
        columns = decode([c["name"] for c in self.signature(model, route.number)])
        outputs = await self._predict(model, route, columns, request_id, load_test)
        shadow = ep.shadow() if number is None and not load_test else None
        if shadow is not None and shadow.number != route.number:
            self._in_background(self._shadow(model, shadow, columns, request_id, outputs))
        return Served(model, route.number, route.slot, request_id, outputs)

    async def _refreshed_on_miss(self) -> bool:
        """Read the slot table now when a request found nothing to route to (a sign-off
        just moved a version, between two polls), at most every ``MISS_REFRESH`` seconds
        so misses cannot flood the database; True when the routing changed."""
        now = time.monotonic()
        if now - self._missed_at < MISS_REFRESH:
            return False
        self._missed_at, before = now, self._state
        await self.refresh()
        return self._state != before

    async def _predict(
        self, model: str, route: Route, columns: dict, request_id: str, load_test=False
    ) -> dict:
        pool = self.pools.get((model, route.number))
        stats = None if load_test else self.book.get(model, route.number, route.slot)
        t0, now = time.perf_counter(), time.time()
        record = {
            "request_id": request_id,
            "model": model,
            "version": route.number,
            "slot": route.slot,
            "time": now,
            "inputs": columns,
        }
        try:
            request, _rows = validate(
                columns,
                self.signature(model, route.number),
                pool.info.get("nan_ok") if pool else None,
                self.settings.max_rows,
            )
            if pool is None:
                raise Unavailable(f"{model}:{route.number} is being unloaded; retry.")
            try:
                answer = await pool.predict({"id": request_id, **request})
            except WorkerUnavailable as e:
                raise Unavailable(
                    f"{model}:{route.number} could not answer: {e}.",
                    "Retry shortly; the worker is being restarted.",
                ) from None
            if not answer.get("ok"):
                if str(answer.get("error")).startswith("MemoryError"):
                    raise ModelOutOfMemory(
                        f"{model}:{route.number} ran out of memory on this request (each worker "
                        f"may use {self.settings.worker_memory_limit >> 20} MiB).",
                        "Send fewer rows, or shorter values, per request.",
                    )
                raise PredictFailed(
                    f"{MODEL_REFUSED}{answer.get('error')}",
                    "Check the values against GET /v2/models/NAME.",
                )
        except HandoffError as e:
            if stats is None:  # a load test's: its own result counts it
                raise
            ms = (time.perf_counter() - t0) * 1000
            server_side = e.status >= 500 or isinstance(e, PredictFailed)
            stats.record(now, ms, error=server_side)
            if server_side and route.slot == "canary":
                self._wake.set()
            self.log.append({**record, "latency_ms": ms, "status": e.status, "error": e.message})
            raise
        outputs = answer["outputs"]
        if stats is None:
            return outputs
        ms = (time.perf_counter() - t0) * 1000
        classes, scores = predictions_of(outputs)
        broken = not_finite(outputs.get("predict"))
        stats.record(now, ms, error=bool(broken), classes=classes, scores=scores)
        if broken and route.slot == "canary":
            self._wake.set()
        if route.slot != "shadow":  # the shadow answers the same request id
            self.recent[request_id] = (model, route.number, route.slot, outputs.get("predict"))
            if len(self.recent) > RECENT_REQUESTS:
                self.recent.popitem(last=False)
        self.log.append({**record, "latency_ms": ms, "status": 200, "outputs": outputs})
        return outputs

    async def _shadow(
        self, model: str, route: Route, columns: dict, request_id: str, answered: dict
    ) -> None:
        """The mirrored request; its answer is compared with the one sent, row by row."""
        try:
            outputs = await self._predict(model, route, columns, request_id)
        except HandoffError:  # logged and counted in _predict; never sent
            return
        mine, theirs = outputs.get("predict") or [], answered.get("predict") or []
        stats, now = self.book.get(model, route.number, route.slot), time.time()
        for a, b in zip(mine, theirs, strict=False):
            stats.record_pair(now, a == b)

    # -- what the deployment view shows ---------------------------------------------------

    def version_stats(self, model: str, number: int, slot: str) -> dict:
        """What this replica's workers of a version look like (the traffic stats are every
        replica's, read from the store: ``serving.canary_guard``)."""
        pool = self.pools.get((model, number))
        return {
            "ready": bool(pool and pool.ready),
            "backend": pool.info.get("backend") if pool else None,
            "workers": len(pool.pids()) if pool else 0,
            "worker_pids": pool.pids() if pool else [],
            "restarts": pool.restarts if pool else 0,
            "load_error": pool.error if pool else self._not_loaded(model, number),
        }

    def _not_loaded(self, model: str, number: int) -> str | None:
        if (model, number) in self.resting:
            return "not loaded: past c.Serving.max_test_slots"
        return self.load_errors.get((model, number))

    def ready(self) -> bool:
        """Ready once the slot table is routed and no version in a slot is still loading: a
        load balancer sends a restarted replica nothing before."""
        return self.not_ready() is None

    def not_ready(self) -> str | None:
        """Why the server is not ready (the rule of ``ready``, said for ``/api/v1/ready``),
        or None."""
        if self._state is None:
            return "it has not read the slot table yet"
        loading = sorted(self._waiting) + sorted(
            (ep.model, n)
            for ep in self.endpoints.values()
            for n in ep.versions()
            if not self._up(ep.model, n) and (ep.model, n) not in self._waiting
        )
        if not loading:
            return None
        shown = ", ".join(f"{m}:{n}" for m, n in loading[:5]) + (" …" if len(loading) > 5 else "")
        return f"{shown} {'is' if len(loading) == 1 else 'are'} still loading"


def _bounded(rows: list[dict], most: int) -> tuple[list[dict], set[tuple[str, int]]]:
    """The slot rows to load: every one but the test slots past the ``most`` newest (a test
    slot whose version also serves elsewhere loads anyway), and those left resting."""
    serving = {(r["model"], int(r["number"])) for r in rows if r["slot"] != "test"}
    tests = sorted(
        (r for r in rows if r["slot"] == "test" and (r["model"], int(r["number"])) not in serving),
        key=lambda r: str(r.get("since") or ""),
        reverse=True,
    )
    resting = {(r["model"], int(r["number"])) for r in tests[max(0, most) :]}
    return [r for r in rows if (r["model"], int(r["number"])) not in resting], resting


def log_served(handler) -> None:
    """Only refusals and failures reach the log: a served request is in the prediction log."""
    if handler.get_status() >= 400:
        from ..handlers.base import log_request

        log_request(handler)


def _bind(ip: str, port: int) -> list[socket.socket]:
    from tornado.netutil import bind_sockets

    return bind_sockets(port, address=ip)
