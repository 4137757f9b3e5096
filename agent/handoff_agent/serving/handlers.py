"""The model server's routes: thin over ``ModelServer``. Same rules as the agent API (Host,
Origin, token, the one JSON error shape); a consumer token reaches only its models."""

from __future__ import annotations

import time

from ..errors import BadRequest, Forbidden, TooLarge
from ..handlers.base import ANY_ROLE, MAX_JSON_DEPTH, BaseHandler, json_depth, parse_uint
from ..names import validate_name
from ..tokens import in_force, token_hash
from . import protocols
from .inputs import decode_invocations, decode_v2, malformed, split_binary
from .server import Unavailable

CALLERS = (*ANY_ROLE, "consumer")
TOKEN_CACHE_SECONDS = 5.0
# V2 clients (tritonclient) send no Content-Type; the binary extension sends bytes.
BODY_TYPES = ("application/json", "application/octet-stream", "")


class ServingHandler(BaseHandler):
    roles = {"GET": CALLERS, "POST": CALLERS}

    @property
    def server(self):
        return self.settings["model_server"]

    async def authenticate(self) -> dict:
        """As the agent API, with a short cache of stored tokens: a consumer's every request
        would otherwise wait on the store. A revoked token stops within TOKEN_CACHE_SECONDS,
        an expired one at once. The token is hashed once, for the cache and the store."""
        given = self.given_token()
        if self.owner_token(given):
            return await super().authenticate()  # the owner: no store, nothing to cache
        hashed = token_hash(given)
        del given  # no raw token kept in memory
        cache = self.server.token_cache
        hit = cache.get(hashed)
        if hit is not None and hit[1] > time.monotonic():
            # a token that expired meanwhile stops at once
            return in_force(hit[0], self.token_max_age())
        identity = await self.stored_identity(hashed)
        if len(cache) > 10_000:
            cache.clear()
        cache[hashed] = (identity, time.monotonic() + TOKEN_CACHE_SECONDS)
        return identity

    @property
    def max_body(self) -> int:
        return self.server.settings.max_body_bytes

    def too_large(self) -> TooLarge:
        return TooLarge(
            f"The request body is larger than the model server's limit of {self.max_body} bytes.",
            "Split the rows over several requests, or send the tensors with the binary-data "
            "extension (c.Serving.max_body_bytes sets the limit).",
        )

    def check_content_type(self) -> None:
        self.body_types = BODY_TYPES
        super().check_content_type()

    def may_call(self, name: str) -> str:
        validate_name(name)
        scope = self.identity.get("models") if self.identity else None
        if scope is not None and name not in scope:
            raise Forbidden(
                f"This token may not call model {name!r}.",
                f"It is scoped to: {', '.join(scope) or 'no model'}.",
                code="model_not_allowed",
            )
        return name

    def number(self, raw: str | None) -> int | None:
        if raw is None:
            return None
        value = parse_uint(raw)
        if value is None:
            raise BadRequest(
                f"Version {raw!r} is not a version number (1, 2, …).", code="bad_version"
            )
        return value

    def write_served(self, served, body: dict) -> None:
        self.set_header(protocols.VERSION_HEADER, str(served.number))
        self.set_header(protocols.SLOT_HEADER, served.slot)
        self.set_header(protocols.REQUEST_ID_HEADER, served.request_id)
        self.write_json(body)

    def sticky_key(self) -> str | None:
        return self.request.headers.get(self.server.settings.sticky_header) or None

    def load_test(self) -> bool:
        """Whether the request is central's load test (``LOAD_TEST_HEADER``): refused from any
        token but an unscoped admin's, so no caller can keep its traffic out of the stats."""
        if protocols.LOAD_TEST_HEADER not in self.request.headers:
            return False
        identity = self.identity or {}
        if "admin" not in identity.get("roles", ()) or identity.get("models") is not None:
            raise Forbidden(
                f"Only an admin token may send {protocols.LOAD_TEST_HEADER}.",
                "It keeps a request out of the serving statistics and the prediction log; "
                "send the request without it.",
                code="load_test_not_allowed",
            )
        return True


class LiveHandler(ServingHandler):
    public = True

    def get(self):
        self.write_json({"live": True})


class ReadyHandler(ServingHandler):
    public = True

    def get(self):
        if not self.server.ready():
            raise Unavailable("Some served versions are still loading.", "Retry shortly.")
        self.write_json({"ready": True})


class ServerMetadataHandler(ServingHandler):
    public = True

    def get(self):
        from .._version import __version__

        self.write_json(
            {"name": "handoff", "version": __version__, "extensions": ["binary_tensor_data"]}
        )


class ModelMetadataHandler(ServingHandler):
    def get(self, name: str, number: str | None = None):
        name = self.may_call(name)
        ep = self.server.endpoint(name)
        route = self.server.route_for(name, self.number(number), None)
        pool = self.server.pools.get((name, route.number))
        body = protocols.v2_metadata(
            name,
            sorted(ep.versions()),
            self.server.signature(name, route.number),
            pool.info if pool is not None else {},
        )
        self.set_header(protocols.VERSION_HEADER, str(route.number))
        self.write_json(body)


class ModelReadyHandler(ServingHandler):
    def get(self, name: str, number: str | None = None):
        name = self.may_call(name)
        route = self.server.route_for(name, self.number(number), None)
        pool = self.server.pools.get((name, route.number))
        if pool is None or not pool.ready:
            raise Unavailable(f"{name}:{route.number} is not ready.", "Retry shortly.")
        self.set_header(protocols.VERSION_HEADER, str(route.number))
        self.write_json({"name": name, "version": str(route.number), "ready": True})


class InferHandler(ServingHandler):
    async def post(self, name: str, number: str | None = None):
        name = self.may_call(name)
        header = self.request.headers.get("Inference-Header-Content-Length")
        raw = self.body
        if json_depth(raw if header is None else raw[: parse_uint(header) or 0]) > MAX_JSON_DEPTH:
            raise malformed(f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels.")
        body, tail = split_binary(raw, header)
        wanted = [o.get("name") for o in body.get("outputs") or [] if isinstance(o, dict)]
        served = await self.server.infer(
            name,
            self.number(number),
            lambda expected: decode_v2(body, tail, expected),
            self.sticky_key(),
            body.get("id") if isinstance(body.get("id"), str) else self.request_id(),
            load_test=self.load_test(),
        )
        unknown = [w for w in wanted if w not in served.outputs]
        if unknown:
            raise BadRequest(
                f"{name} has no output named {unknown[0]!r}.",
                f"Its outputs: {', '.join(served.outputs)}.",
                code="unknown_output",
            )
        self.write_served(
            served,
            protocols.v2_infer(name, served.number, served.request_id, served.outputs, wanted),
        )

    def request_id(self) -> str | None:
        return self.request.headers.get(protocols.REQUEST_ID_HEADER)


class InvocationsHandler(InferHandler):
    """MLflow's scoring route. The model: ``?model=`` or ``X-Handoff-Model`` (needed when
    more than one model is served); a version: ``?version=`` or ``X-Handoff-Version``."""

    query = {"POST": ("model", "version")}  # the model server's only query parameters

    async def post(self):
        name = self.get_query_argument("model", None) or self.request.headers.get("X-Handoff-Model")
        if not name:  # the one model this token may call, never naming the others
            scope = self.identity.get("models") if self.identity else None
            served = sorted(n for n in self.server.endpoints if scope is None or n in scope)
            if len(served) != 1:
                raise BadRequest(
                    "Say which model to call.",
                    f"Add ?model=NAME (served: {', '.join(served) or 'none'}).",
                    code="model_required",
                )
            name = served[0]
        name = self.may_call(name)
        version = self.get_query_argument("version", None) or self.request.headers.get(
            "X-Handoff-Version"
        )
        body = self.json_body()
        served = await self.server.infer(
            name,
            self.number(version),
            lambda expected: decode_invocations(body, expected),
            self.sticky_key(),
            self.request_id(),
            load_test=self.load_test(),
        )
        self.write_served(served, protocols.invocations(served.outputs))


def routes() -> list[tuple]:
    from ..openapi import template

    model = r"/v2/models/(?P<name>[^/]+)"
    version = model + r"/versions/(?P<number>[^/]+)"
    table = [
        (r"/v2/health/live", LiveHandler),
        (r"/v2/health/ready", ReadyHandler),
        (r"/v2", ServerMetadataHandler),
        (model, ModelMetadataHandler),
        (version, ModelMetadataHandler),
        (model + r"/ready", ModelReadyHandler),
        (version + r"/ready", ModelReadyHandler),
        (model + r"/infer", InferHandler),
        (version + r"/infer", InferHandler),
        (r"/invocations", InvocationsHandler),
    ]
    return [(p, h, {"route": template(p)}) for p, h in table]  # named in a refusal
