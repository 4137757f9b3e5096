"""The one error contract: every API failure is ``{"error": {"code", "message", "hint"}}``."""

from __future__ import annotations


class HandoffError(Exception):
    """A failure the caller can act on. ``status`` is the HTTP status it maps to."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, hint: str = "", *, status: int | None = None, code=None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def to_json(self) -> dict:
        return error_body(self.code, self.message, self.hint)


class BadRequest(HandoffError):
    status, code = 400, "bad_request"


class Unauthorized(HandoffError):
    status, code = 401, "unauthorized"


class Forbidden(HandoffError):
    status, code = 403, "forbidden"


class NotFound(HandoffError):
    status, code = 404, "not_found"


class Conflict(HandoffError):
    status, code = 409, "conflict"


class Gone(HandoffError):
    """What was asked for existed and was removed on purpose (retention pruned a bundle)."""

    status, code = 410, "pruned"


class TooLarge(HandoffError):
    status, code = 413, "too_large"


class UnsupportedMediaType(HandoffError):
    status, code = 415, "unsupported_media_type"


class InvalidBundle(HandoffError):
    status, code = 422, "invalid_bundle"


class Unavailable(HandoffError):
    """Try again later: the answer carries ``Retry-After`` (seconds)."""

    status, code = 503, "unavailable"
    retry_after = 1


class DiskFull(Unavailable):
    """The agent's disk has no room for what it was asked to store; nothing was stored. The
    answer carries ``Retry-After``, so a delivery waits in its sender's outbox."""

    status, code = 503, "disk_full"
    retry_after = 60


class TooManyRequests(HandoffError):
    """Over a rate limit: the answer carries ``Retry-After`` (seconds) for when it lifts."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, hint: str = "", *, retry_after: int = 60):
        super().__init__(message, hint)
        self.retry_after = retry_after


def error_body(code: str, message: str, hint: str = "") -> dict:
    return {"error": {"code": code, "message": message, "hint": hint}}
