"""One base handler holds every request rule: token, Host, Origin, content type, error shape."""

from __future__ import annotations

import hmac
import json
import logging
from http import HTTPStatus

from tornado import web

from .. import tokens
from ..errors import (
    BadRequest,
    Forbidden,
    HandoffError,
    Unauthorized,
    UnsupportedMediaType,
    error_body,
)

log = logging.getLogger("handoff_agent")
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def host_name(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


ANY_ROLE = ("analyst", "reviewer", "admin")


class BaseHandler(web.RequestHandler):
    public = False  # True only for routes that need no token
    body_types: tuple[str, ...] = ("application/json",)  # for mutating requests
    # Roles allowed, per method. Reads are open to every role; writes say who may make them.
    roles: dict[str, tuple[str, ...]] = {"GET": ANY_ROLE}
    identity: dict | None = None

    @property
    def agent(self):
        return self.settings["agent"]

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    async def prepare(self):
        self.check_host()
        self.check_origin()
        if not self.public:
            self.identity = await self.authenticate()
            self.check_role()
        if self.request.method in MUTATING:
            self.check_content_type()

    def check_role(self) -> None:
        method = self.request.method
        implemented = getattr(type(self), method.lower(), None) is not getattr(
            web.RequestHandler, method.lower(), None
        )
        if method not in self.roles and not implemented:
            return  # tornado answers 405
        allowed = self.roles.get(method, ())  # a method without declared roles is closed
        if not set(self.identity["roles"]) & set(allowed):
            raise Forbidden(
                f"{self.identity['user']} ({', '.join(self.identity['roles'])}) may not "
                f"{self.request.method} this route.",
                f"It needs one of the roles: {', '.join(allowed) or 'none'}.",
                code="forbidden_role",
            )

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
        if hmac.compare_digest(given.encode(), self.agent.token.encode()):
            return self.agent.owner
        found = await self.agent.call(tokens.lookup, self.agent.registry.db, given)
        if found is None:
            raise Unauthorized(
                "The token is wrong.",
                "`jupyter handoff status` shows the running agent's token.",
            )
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
                f"Send {' or '.join(self.body_types)}.",
            )

    def json_body(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError as e:
            raise BadRequest(f"The body is not valid JSON ({e}).") from None
        if not isinstance(body, dict):
            raise BadRequest("The body must be a JSON object.")
        return body

    def write_json(self, obj, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(obj, default=str))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, HandoffError):
            body = exc.to_json()
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

    def _handle_request_exception(self, e: BaseException) -> None:
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
