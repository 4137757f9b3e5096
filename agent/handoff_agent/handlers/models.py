"""Routes for models and versions. Each one parses, calls a manager, and writes JSON."""

from __future__ import annotations

import asyncio

from .. import openapi, reports
from .._version import __version__
from ..errors import BadRequest, Forbidden, NotFound, Unavailable
from ..names import validate_name
from ..runtime import SPOOL_FOLLOW_HEADER, SPOOL_TYPE
from ..store.blobs import BlobError
from ..vocabulary import MAX_KEEP
from . import detached
from .base import ANY_ROLE, BaseHandler, int_arg
from .pipeline import blob_errors

# Reports are documents: no script, no plugins, no framing by another site.
REPORT_CSP = (
    "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'"
)


class HealthHandler(BaseHandler):
    public = True

    def get(self):
        self.write_json(
            {
                "status": "ok",
                "version": __version__,
                "role": self.agent.role,
                "sandbox": self.agent.model_sandbox.mode,  # bwrap, rlimits or unavailable
                "disk": self.agent.room.state(),  # ok, low or full
            }
        )


class ReadyHandler(BaseHandler):
    """Readiness, for a load balancer in front of replicas: 200 while the metadata and blob
    stores answer and, on a central that serves, its model server is ready (the rule of
    ``/v2/health/ready``); else a 503 with Retry-After, so traffic goes to a replica that can
    serve it. ``/health`` stays liveness: the process answers."""

    public = True
    NO_BLOB = "0" * 64  # a digest no content has: asking for it reaches the store, reads nothing

    async def get(self):
        await self.agent.read(self.agent.registry.ping)
        await self.agent.read(self.agent.store.exists, self.NO_BLOB)
        body = {"status": "ready", "role": self.agent.role}
        if self.agent.role == "central" and self.agent.serving.enabled:
            server = self.agent.model_server
            why = "it has not started yet" if server is None else server.not_ready()
            if why is not None:
                raise Unavailable(
                    f"The model server is not ready: {why}.",
                    "Retry shortly; GET /api/v1/models/NAME/deployment shows each version's "
                    "load_error.",
                    code="model_server_not_ready",
                )
            body["model_server"] = "ready"
        self.write_json(body)


class OpenAPIHandler(BaseHandler):
    """The API's OpenAPI 3 document. Public: it describes routes, never data."""

    public = True

    def get(self):
        self.write_json(openapi.document(self.agent.role))


class MetaHandler(BaseHandler):
    """The shared vocabulary (metric directions, statuses, the live stage flow), so the panel
    never keeps its own copy. Any role may read it."""

    def get(self):
        self.write_json(self.agent.meta())


class ModelsHandler(BaseHandler):
    """Models by name, a page at a time: ``limit`` (default 1000) and ``after`` (the last
    name of the previous page, given back as ``next`` while there are more)."""

    async def get(self):
        limit = int_arg(self, "limit", 1000, 1, 1000)
        after = self.get_query_argument("after", None)
        if after is not None:
            validate_name(after)
        central = self.agent.role == "central"  # models monitored from an imported log too
        rows = await self.agent.read(self.agent.registry.models_page, limit + 1, after, central)
        body = {"models": rows[:limit]}
        if central:  # monitoring lives at central
            await self._alerts(body["models"])
        if len(rows) > limit:
            body["next"] = rows[limit - 1]["name"]
        self.write_json(body)

    async def _alerts(self, models: list[dict]) -> None:
        """Each model's firing alerts, worst kind first, and their count: the panel's
        badge without a request per model."""
        from ..monitor_policy import SEVERITY

        names = [m["name"] for m in models]
        firing = await self.agent.read(self.agent.registry.firing_alerts, names)
        for m in models:
            found = sorted(
                firing.get(m["name"], []),
                key=lambda a: SEVERITY.index(a["kind"]) if a["kind"] in SEVERITY else 99,
            )
            m["open_alerts"] = len(found)
            m["firing"] = found


class ChampionHandler(BaseHandler):
    """The version a new one is compared with, by the same rule the checks use."""

    async def get(self, name: str):
        validate_name(name)
        before = int_arg(self, "before", 2**62, 1, 2**62)
        await self.known_model(name)
        found = await self.agent.read(self.agent.versions.champion, name, before)
        self.write_json({"name": name, "champion": found["number"] if found else None})


class PruneHandler(BaseHandler):
    """Admin: remove the bundles of a model's old versions nobody loads again (retention)."""

    roles = {"POST": ("admin",)}
    does = "prune versions"

    async def post(self, name: str):
        validate_name(name)
        body = self.json_body()
        dry_run, keep = body.get("dry_run", False), body.get("keep")
        if not isinstance(dry_run, bool):
            raise BadRequest("dry_run must be true or false.", '{"keep": 10, "dry_run": true}')
        if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= MAX_KEEP:
            raise BadRequest(
                f"keep must be a whole number of versions, from 1 to {MAX_KEEP:,}.", '{"keep": 10}'
            )
        await self.known_model(name)
        retention, user = self.agent.retention, self.identity["user"]
        with blob_errors(f"pruning {name}"):
            out = await self.agent.call(retention.prune, name, keep, user, dry_run)
        self.write_json(out)


class VersionHandler(BaseHandler):
    async def get(self, name: str, number: str):
        validate_name(name)
        version = await self.agent.read(self.agent.registry.get_version, name, int(number))
        if version.get("validation") is not None:  # central: backend, parity, load test
            from ..serving.validation import summary

            version["validation"] = summary(version["validation"])
        self.write_json(version)


class VersionsHandler(BaseHandler):
    """GET lists versions. POST a bundle: streamed to disk and hashed as it arrives, so memory
    stays flat whatever the model's size."""

    body_types = ("application/x-tar", SPOOL_TYPE)
    max_body = None  # the upload enforces the agent's bundle limit itself
    upload = None
    spooled = False  # a JSON body naming a spool entry a local kernel wrote
    follow = None  # ingest.Follow: the entry is being read as the kernel writes it
    following = None  # the read, started in prepare()

    async def get(self, name: str):
        validate_name(name)
        limit = int_arg(self, "limit", 100, 1, 1000)
        before = int_arg(self, "before", None, 1, 2**62)
        digest = self.agent.ingest.parse_digest(self.get_query_argument("digest", None))
        registry = self.agent.registry
        versions = await self.agent.read(registry.list_versions, name, limit, before, digest)
        self.write_json({"name": name, "versions": versions})

    roles = {"GET": ANY_ROLE, "POST": ("analyst", "admin")}
    does = "push a version"

    async def prepare(self):
        await super().prepare()
        if self.request.method != "POST":
            return
        if self.agent.role == "central":  # refused before a byte of the body is read
            raise Forbidden(
                "Versions enter central only through signed intake, never by a direct push.",
                "Push to your local agent (`%mlops push`); it checks the model and hands it "
                "off to central, signed.",
                code="intake_only",
            )
        name = self.path_kwargs["name"]
        declared = self.declared_length()
        self.expected = self.agent.ingest.parse_digest(self.request.headers.get("X-Handoff-Digest"))
        if await self.answered_existing(name):
            return
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == SPOOL_TYPE:
            self.spooled, self.max_body, self._chunks = True, 4096, []
            if declared is not None and declared > self.max_body:
                raise self.too_large()
            entry = self.request.headers.get(SPOOL_FOLLOW_HEADER)
            if entry is not None:
                ingest = self.agent.ingest
                self.follow = ingest.follow(name, entry)
                self.following = asyncio.ensure_future(
                    self.agent.run_follow(ingest.take_followed, name, entry, self.follow)
                )
                # seen here when post() never awaits it (the kernel went away)
                self.following.add_done_callback(lambda f: f.cancelled() or f.exception())
            return
        self.upload = self.agent.ingest.begin(name, declared)
        if declared is None:  # chunked: tornado reads it (data_received)
            # Past the limit tornado drops the connection instead of buffering more.
            self.request.connection.set_max_body_size(self.agent.max_bundle_size + 1)
            return
        # A declared length (every push sends one): read past tornado and answer here.
        await detached.read_body(self.request, declared, self.upload)
        await self.post(name)

    async def answered_existing(self, name: str) -> bool:
        """A client that sends ``Expect: 100-continue`` with its digest waits for the go-ahead
        before it sends (or spools) the bundle: when a version of ``name`` already holds those
        bytes, it is the answer, and no byte of the bundle is sent. The same answer as a
        push of the same bytes again; one request instead of a lookup and a push."""
        if self.expected is None or self.request.headers.get("Expect", "").lower() != (
            "100-continue"
        ):
            return False
        validate_name(name)
        try:
            found = await self.agent.read(
                self.agent.registry.list_versions, name, 1, None, self.expected
            )
        except NotFound:  # the model's first version
            return False
        if not found or found[0]["pruned"]:  # a pruned version's bytes are welcome back
            return False  # tornado sends "100 Continue" once prepare() returns
        try:  # stored bytes gone bad are replaced by the push (the corrupt blob's advice)
            await self.agent.run_io(self.agent.store.verify, found[0]["digest"])
        except BlobError:
            return False
        self.write_json(
            {
                "name": name,
                "version": found[0]["number"],
                "digest": found[0]["digest"],
                "created": False,
                "status": found[0]["status"],
            }
        )
        return True

    def data_received(self, chunk: bytes) -> None:
        if self.spooled:
            super().data_received(chunk)
        elif self.upload is not None:  # None once answered_existing() has answered
            self.upload.write(chunk)

    def on_connection_close(self) -> None:
        if self.upload is not None:
            self.upload.abort()
        if self.follow is not None:
            self.follow.cancel()  # the read refuses the entry and removes it
        super().on_connection_close()  # ends the request, or it waits for its body forever

    async def post(self, name: str):
        """A tar body, or ``{"spool": entry}``: a bundle a kernel on this machine wrote into
        the agent's spool (named in the runtime file), adopted without a copy."""
        if self.following is not None:
            try:
                self.follow.declare(self.json_body())
            finally:
                if self.follow.size is None:
                    self.follow.cancel()
            with blob_errors(f"the upload of {name}"):
                digest, manifest, size = await self.following
        else:
            if self.spooled:
                entry = self.json_body().get("spool")
                self.upload = await self.agent.run_io(
                    self.agent.ingest.adopt, name, entry, self.expected
                )
            upload, self.upload = self.upload, None
            with blob_errors(f"the upload of {name}"):
                digest, manifest = await self.agent.run_io(
                    self.agent.ingest.store_blob, upload, name, self.expected
                )
            size = upload.size
        version, created = await self.agent.check_flow.create_version(
            name, digest, size, manifest, actor=self.identity["user"]
        )
        body = {
            "name": name,
            "version": version["number"],
            "digest": digest,
            "created": created,
            "status": version["status"],
        }
        self.write_json(body, 201 if created else 200)


class ReportHandler(BaseHandler):
    """A version's report. Sandboxed: a report is a document, never an app with our origin."""

    async def get(self, name: str, number: str):
        validate_name(name)
        kind = self.get_query_argument("format", "html")
        if kind not in reports.KINDS:
            raise BadRequest(
                f"Unknown report format {kind!r}.", f"Use one of: {', '.join(reports.KINDS)}."
            )
        registry = self.agent.registry
        await self.agent.read(registry.version_id, name, int(number))  # 404 for a bad version
        digest = await self.agent.read(registry.report_digest, name, int(number), kind)
        if digest is None:
            raise NotFound(
                f"{name}:{number} has no report yet.",
                "Reports are written when every check has finished; watch /api/v1/events.",
                code="report_pending",
            )
        with blob_errors(f"the {kind} report of {name}:{number}"):
            data = await self.agent.run_io(self.agent.store.read_bytes, digest)
        self.set_header("Content-Type", reports.KINDS[kind])
        self.set_header("Content-Security-Policy", REPORT_CSP)
        self.finish(data)
