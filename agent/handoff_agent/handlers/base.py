"""One base handler holds every request rule: token, Host, Origin, content type, body size,
error shape.

Every handler streams its request body, so that ``prepare`` (token, headers, declared size) runs
before a single body byte is read: a refused request is answered and its connection closed
without the server reading what it sent. JSON routes keep at most ``max_body`` bytes.
"""

from __future__ import annotations

import difflib
import hmac
import json
import logging
import math
import re
import urllib.parse
from http import HTTPStatus

from tornado import web

from .. import tokens
from ..disk_room import out_of_space
from ..errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HandoffError,
    NotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    error_body,
)
from ..names import CONTROL
from ..store.blobs import BlobCorrupt, BlobMissing, BlobUnavailable
from ..store.engine import unavailable
from ..vocabulary import JSON_BODY_LIMIT

log = logging.getLogger("handoff_agent")
access_log = logging.getLogger("tornado.access")
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
NO_BODY = {"GET", "HEAD", "DELETE", "OPTIONS"}  # methods whose requests carry no body here
MAX_JSON_DEPTH = 32
UINT = re.compile(r"[0-9]{1,18}")  # ASCII only: str.isdigit() and int() take any Unicode digit
# Query values never written to a log, whatever the route (a token in a URL is still a token).
SECRET_KEYS = ("token", "secret", "key", "password", "auth", "signature", "sig")
_JSON_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def strict_json(obj) -> str:
    """JSON every parser reads: a NaN or infinity (a model's parameter, e.g. xgboost's
    ``missing``) is null, not the ``NaN`` that browsers' JSON.parse refuses."""
    try:
        return json.dumps(obj, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(obj), default=str, allow_nan=False)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def parse_uint(raw: str | None) -> int | None:
    """A non-negative decimal integer of ASCII digits, or None for anything else."""
    return int(raw) if raw is not None and UINT.fullmatch(raw) else None


AFTER_HINT = "after is the `next` of the page before; leave it out to start at the first."


def int_arg(handler: BaseHandler, name: str, default: int | None, lo: int, hi: int, hint: str = ""):
    """The whole number query parameter ``name`` in [lo, hi], or ``default``; else a 400
    whose hint (``hint``, or one from the bounds) says what to give."""
    raw = handler.get_query_argument(name, None)
    if raw is None:
        return default
    if not hint:
        span = f"from {lo} to {hi}" if hi < 2**62 else f"{lo} or more"
        left = f", or leave it out for {default}" if default is not None and default < 2**62 else ""
        hint = f"Give {name} as a whole number {span}{left}."
    value = parse_uint(raw)
    if value is None:
        raise BadRequest(f"{name} must be a whole number (0, 1, 2 …), not {raw!r}.", hint)
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}.", hint)
    return value


def page_args(handler: BaseHandler, default: int) -> tuple[int, int]:
    """``limit`` (1-1000) and ``after`` (the ``next`` of the page before) of a listing
    paged by id."""
    after = int_arg(handler, "after", 0, 0, 2**62, AFTER_HINT)
    return int_arg(handler, "limit", default, 1, 1000), after


def shown(raw: str, width: int = 40) -> str:
    """A caller's text fit to quote in a message: control characters out, at most ``width``."""
    return CONTROL.sub("", raw)[:width]


def cache_buster(key: str, values: list[bytes]) -> bool:
    """A bare number with no value (``?1712345678901``): the cache buster JupyterLab's
    ``ServerConnection`` appends to every request, which the panel's calls reach the agents
    with. No route takes a parameter named by a number, so it is no parameter here."""
    return key.isascii() and key.isdigit() and not any(values)


def redact_uri(uri: str) -> str:
    """The URI with the values of secret-looking query parameters replaced, for logs."""
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    parts = []
    for item in query.split("&"):
        key, eq, _ = item.partition("=")
        name = urllib.parse.unquote_plus(key).lower()
        secret = any(k in name for k in SECRET_KEYS)
        parts.append(f"{key}{eq}REDACTED" if eq and secret else item)
    return f"{path}?{'&'.join(parts)}"


def log_request(handler: web.RequestHandler) -> None:
    """The access log line (tornado's ``log_function``): query secrets redacted, no headers.
    A read that succeeded is DEBUG: agents and panels poll, and at INFO one analyst's local
    agent asking after its versions wrote thousands of lines a minute at central."""
    status = handler.get_status()
    request = handler.request
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if level == logging.INFO and request.method in ("GET", "HEAD"):
        level = logging.DEBUG
    access_log.log(
        level,
        "%d %s %s (%s) %.2fms",
        status,
        request.method,
        redact_uri(request.uri or ""),
        request.remote_ip,
        1000.0 * request.request_time(),
    )


def json_depth(data: bytes) -> int:
    """How deeply arrays and objects nest in ``data`` (strings skipped), without recursing."""
    if b"\\" in data:  # escapes: the tokenizer decides where each string ends
        kept = _JSON_STRINGS.sub(b"", data)
    else:  # between quote pairs is a string; an unpaired last quote starts none
        parts = data.split(b'"')
        kept = b"".join(parts[0::2]) + (parts[-1] if len(parts) % 2 == 0 else b"")
    depth = deepest = 0
    for c in kept.translate(None, _NOT_BRACKETS):  # only brackets left, in C
        if c in (91, 123):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
        else:
            depth -= 1
    return deepest


def blob_failure(error: BaseException, what: str = "a stored file") -> HandoffError | None:
    """The API error for a blob the request needed: the store unreachable (503, retry), or
    ``what`` missing or no longer matching its digest (409: it is not served or used)."""
    if isinstance(error, BlobUnavailable):
        return Unavailable(
            f"The blob store cannot be reached: {error}.",
            "Try again; if it persists, check the agent's blob_url and the S3 endpoint.",
            code="blob_store_unavailable",
        )
    if isinstance(error, BlobCorrupt | BlobMissing):
        return Conflict(
            f"The stored copy of {what} is missing or corrupt ({error}); it is not used.",
            "Run `jupyter handoff fsck` to list damaged blobs, then push the model again.",
            code="blob_corrupt",
        )
    return None


def host_name(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


ANY_ROLE = ("analyst", "reviewer", "admin")


@web.stream_request_body
class BaseHandler(web.RequestHandler):
    public = False  # True only for routes that need no token
    body_types: tuple[str, ...] = ("application/json",)  # for mutating requests
    max_body = JSON_BODY_LIMIT  # bytes a JSON body may hold; streaming routes override
    # Roles allowed, per method. Reads are open to every role; writes say who may make them.
    roles: dict[str, tuple[str, ...]] = {"GET": ANY_ROLE}
    # Query parameters taken, per method; any other, or one given twice, is a 400. The agent's
    # routes take what their OpenAPI operations declare (``make_app`` hands them over).
    query: dict[str, tuple[str, ...]] = {}
    # Top-level JSON body keys taken, per method; any other is a 400 (``check_fields``). From
    # the OpenAPI operations too (``openapi.body_names``); a method not here takes its body
    # as it comes (free-form by design: ``openapi.FREE_FORM_BODIES``).
    fields: dict[str, tuple[str, ...]] = {}
    route = ""  # the route's path template, to name it in a refusal
    noun = ""  # what the route is, in a refusal's words ("the audit log"); else METHOD route
    does = ""  # what a restricted write does, in a refusal's words ("sign versions off")
    identity: dict | None = None
    _chunks: list | None = None
    _received = 0

    def initialize(
        self, route: str = "", query: dict | None = None, fields: dict | None = None
    ) -> None:
        if route:
            self.route = route
        if query is not None:
            self.query = query
        if fields is not None:
            self.fields = fields

    def where(self) -> str:
        """The route in a refusal's words: its noun, else METHOD and its path template."""
        return self.noun or f"{self.request.method} {self.route or shown(self.request.path, 80)}"

    @property
    def agent(self):
        return self.settings["agent"]

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    async def prepare(self):
        """Every rule that needs only the headers, in order. All run before the body is read:
        a refusal here is answered at once and the connection closed unread."""
        self.check_host()
        self.check_origin()
        if not self.public:
            self.identity = await self.authenticate()
            self.check_role()
        self.check_query()
        declared = self.declared_length()
        if self.request.method in NO_BODY and (declared or self.chunked()):
            raise BadRequest(
                f"A {self.request.method} request carries no body here.",
                "Send the request without a body.",
                code="unexpected_body",
            )
        # `curl -X POST URL` sends no body and no type: a JSON route reads {}
        empty_json = not declared and not self.chunked() and "application/json" in self.body_types
        if self.request.method in MUTATING - NO_BODY and self.implements() and not empty_json:
            self.check_content_type()  # (a DELETE has no body to type; an unknown method 405)
        if self.max_body is not None:
            if declared is not None and declared > self.max_body:
                raise self.too_large()
            self._chunks = []
            if self.chunked():  # counted in data_received: tornado's own cap answers a bare 400
                self.request.connection.set_max_body_size(1 << 62)

    def declared_length(self) -> int | None:
        raw = self.request.headers.get("Content-Length")
        if raw is None:
            return None
        value = parse_uint(raw.strip())
        if value is None:
            raise BadRequest("Content-Length must be a decimal integer.", code="bad_length")
        return value

    def chunked(self) -> bool:
        return "chunked" in self.request.headers.get("Transfer-Encoding", "").lower()

    def too_large(self) -> TooLarge:
        return TooLarge(
            f"The request body is larger than this route's limit of {self.max_body} bytes.",
            "JSON bodies here are small; send only the fields the route documents.",
        )

    def data_received(self, chunk: bytes) -> None:
        """Keep a JSON body up to the route's cap; past it, answer 413 and stop reading."""
        if self._chunks is None or self._finished:
            return
        self._received += len(chunk)
        if self._received > self.max_body:
            self._chunks = None
            self._handle_request_exception(self.too_large())
            return
        self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks or ())

    def implements(self) -> bool:
        """Whether this route has the request's method (else tornado answers 405)."""
        method = self.request.method.lower()
        return getattr(type(self), method, None) is not getattr(web.RequestHandler, method, None)

    def check_role(self) -> None:
        method = self.request.method
        if method not in self.roles and not self.implements():
            return  # tornado answers 405
        allowed = self.roles.get(method, ())  # a method without declared roles is closed
        if not set(self.identity["roles"]) & set(allowed):
            action = self.does or f"{method} {self.request.path}"
            held = ", ".join(self.identity["roles"]) or "no role"
            raise Forbidden(
                f"{self.identity['user']} ({held}) may not {action}: that needs the "
                f"{' or '.join(allowed) or 'no'} role.",
                "Ask an admin of this agent for a token with that role.",
                code="forbidden_role",
            )

    def check_query(self) -> None:
        """Each parameter one the route takes, given once: a misspelt one (``?limt=5``) was
        read as if nothing had been asked, and of ``?limit=1&limit=2`` one counted, silently.
        After the token and role checks, so a caller without them learns nothing more."""
        method = self.request.method
        if not self.implements():
            return  # tornado answers 405
        takes = self.query.get(method, ())
        given = {k: v for k, v in self.request.query_arguments.items() if not cache_buster(k, v)}
        where = self.where()
        for key in given:
            if key not in takes:
                name = shown(key.encode("latin-1").decode(errors="replace"))
                hint = (
                    f"Its parameters are {', '.join(takes)}."
                    if takes
                    else "It takes no query parameters: send the request without them."
                )
                if key.lower() == "token":
                    hint += " The token goes in the Authorization header, never in the URL."
                raise BadRequest(
                    f"{where[:1].upper()}{where[1:]} has no parameter {name!r}.",
                    hint,
                    code="unknown_parameter",
                )
        for key in takes:
            values = given.get(key, [])
            if len(values) > 1:
                example = shown(values[0].decode(errors="replace")) or "…"
                raise BadRequest(
                    f"{key} is given {len(values)} times; {where} takes each parameter once.",
                    self.repeated_hint(key, example),
                    code="repeated_parameter",
                )

    def repeated_hint(self, key: str, example: str) -> str:
        """The hint of a parameter given twice (``example``: its first value, shown)."""
        return f"Give {key} once."

    def check_host(self) -> None:
        name = host_name(self.request.host or "").lower()
        if name not in LOOPBACK and name not in self.agent.allowed_hosts:
            raise Forbidden(
                f"Host {name!r} is not allowed.",
                "Reach the agent through localhost, or add the host to "
                "c.HandoffAgent.allowed_hosts.",
                code="bad_host",
            )

    def check_origin(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin is None:
            return
        same = origin in (f"http://{self.request.host}", f"https://{self.request.host}")
        if not same and origin not in self.agent.allowed_origins:
            raise Forbidden(
                f"Cross-origin requests from {origin!r} are refused.",
                "Add the origin to c.HandoffAgent.allowed_origins if it is trusted.",
                code="bad_origin",
            )

    async def authenticate(self) -> dict:
        """Who is calling: the agent's own token (its owner, every role) or a stored token."""
        given = self.given_token()
        if self.owner_token(given):
            return self.agent.owner
        return await self.stored_identity(tokens.token_hash(given))

    def owner_token(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.agent.token.encode())

    def token_max_age(self) -> float | None:
        """Central's ``[tokens] max_age``, which ends every stored token (a cached one too)."""
        return self.agent.token_max_age

    async def stored_identity(self, hashed: str) -> dict:
        """The identity of the stored token whose hash is ``hashed`` (hashed once a request:
        the lookup and the note of its use share it), under central's ``[tokens] max_age``."""
        agent = self.agent
        found = await agent.read(tokens.lookup, agent.registry, hashed, agent.token_max_age)
        if found is None:
            raise Unauthorized(
                "The token is wrong: it is none this agent holds (mistyped, or revoked).",
                "Ask central's admin for a token of your own (jupyter handoff token create)."
                if agent.role == "central"  # never its owner's token, which holds every role
                else "`jupyter handoff status` shows the running agent's token.",
            )
        agent.note_token_use(hashed)
        return found

    def given_token(self) -> str:
        auth = self.request.headers.get("Authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not given.strip():
            raise Unauthorized(
                "This route needs the agent's token.",
                "Send 'Authorization: token <token>'. `jupyter handoff status` shows the token.",
            )
        return given.strip()

    def check_content_type(self) -> None:
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in self.body_types:
            raise UnsupportedMediaType(
                f"Content-Type {ctype or 'missing'!r} is not accepted here.",
                f"Send {' or '.join(t for t in self.body_types if t)}.",
            )

    def json_body(self) -> dict:
        raw = self.body or b"{}"
        if json_depth(raw) > MAX_JSON_DEPTH:
            raise BadRequest(
                f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels.", code="too_deep"
            )
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise BadRequest(f"The body is not valid JSON ({e}).") from None
        if not isinstance(body, dict):
            raise BadRequest("The body must be a JSON object.")
        if _has_nul(body):  # no text column takes it (PostgreSQL refuses it outright)
            raise BadRequest("Text in the body may not contain NUL (\\u0000) characters.")
        self.check_fields(body)
        return body

    def check_fields(self, body: dict) -> None:
        """Each top-level key of a JSON body one the route's operation declares: a misspelt
        one (``{"nwo": …}``, ``"dryrun"``) was read as if not given, and the route did its
        default (evaluated at the real clock, pruned for real), silently."""
        takes = self.fields.get(self.request.method)
        if takes is None:
            return
        unknown = [k for k in body if k not in takes]
        if not unknown:
            return
        named = []
        for key in unknown[:5]:
            near = difflib.get_close_matches(key, takes, 1)
            named.append(f"{shown(key)!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        where = self.where()
        raise BadRequest(
            f"{where[:1].upper()}{where[1:]} has no body field{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(named)}{more}.",
            f"Its fields are {', '.join(takes)}."
            if takes
            else "It takes no fields: send {} or no body.",
            code="unknown_field",
        )

    async def known_model(self, name: str, monitored: bool = False) -> None:
        """A 404 that names the model when this agent has no version of it (``monitored``:
        nor a prediction log or reference, imported ones included): the reads about a model
        (deployment, monitoring, alerts) would otherwise answer a typo with an empty 200."""
        registry = self.agent.registry
        imported = await self.agent.read(registry.is_monitored, name)
        if monitored and imported:
            return
        try:
            await self.agent.read(registry.list_versions, name, 1)
        except NotFound:
            if imported:  # "no model named" contradicted the inventory, which lists it
                raise NotFound(
                    f"{name!r} is known here only from an imported prediction log: it serves "
                    "elsewhere, with no versions or deployment here.",
                    f"Its windows and alerts: `%mlops monitor {name}` or the panel's Monitor view.",
                ) from None
            raise

    def write_json(self, obj, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(strict_json(obj))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, HandoffError):
            body = exc.to_json()
            if getattr(exc, "retry_after", None):
                self.set_header("Retry-After", str(exc.retry_after))
        elif isinstance(exc, web.HTTPError):
            reason = exc.reason or HTTPStatus(status_code).phrase
            body = error_body(reason.lower().replace(" ", "_"), exc.log_message or reason)
        else:
            body = error_body(
                "internal_error",
                "The agent hit an unexpected error. It is logged on the agent's side.",
                "Check the agent log; `jupyter handoff status` shows where it is.",
            )
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(body))

    def _request_summary(self) -> str:
        request = self.request
        return f"{request.method} {redact_uri(request.uri or '')} ({request.remote_ip})"

    def log_exception(self, typ, value, tb) -> None:
        """Tornado's, without the request's repr (its URI may hold a query secret)."""
        if isinstance(value, web.HTTPError):
            if value.log_message:
                log.warning("%d %s: %s", value.status_code, self._request_summary(), value)
        else:
            log.error("Uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb))

    def _handle_request_exception(self, e: BaseException) -> None:
        # a locked or unreachable database, a full disk, an unreachable blob store: 503; a
        # blob that no longer matches its digest: 409. Never a 500.
        busy = (
            unavailable(e)
            or out_of_space(e, self.agent.role, self.agent.room.retry_after)
            or blob_failure(e)
        )
        if busy is not None:
            log.warning("%d %s: %s", busy.status, self._request_summary(), str(e)[:300])
            e = busy
        if isinstance(e, HandoffError):
            if self._finished:
                return
            self.clear()
            self.set_status(e.status)
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


class NotFoundHandler(BaseHandler):
    public = True

    def prepare(self):
        self.check_host()
        raise web.HTTPError(404, "No such route.")


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False
