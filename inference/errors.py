"""One exception family for every engine failure, so routing can decide what
to retry and the API can answer in OpenAI's error shape."""

from __future__ import annotations


class EngineError(Exception):
    """Base: ``code`` is a stable identifier, ``retryable`` tells routing to fall back."""

    code = "engine_error"
    http_status = 502
    retryable = True

    def __init__(self, message: str, *, status: int | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status  # the backend's HTTP status, when there was one
        self.param = param  # the request field at fault, when one is


class EngineTimeout(EngineError):
    """The backend did not connect, start answering, or finish in time."""

    code = "timeout"
    http_status = 504

    def __init__(self, message: str, *, phase: str):
        super().__init__(message)
        self.phase = phase  # "connect" | "first_byte" | "total"


class RateLimited(EngineError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float | None = None,
                 status: int | None = 429):
        super().__init__(message, status=status)
        self.retry_after = retry_after  # seconds, from Retry-After when given


class ServerError(EngineError):
    code = "server_error"
    http_status = 502


class ConnectionFailed(EngineError):
    """Could not connect, or the connection dropped (also mid-stream)."""

    code = "connection_error"
    http_status = 502


class BadRequest(EngineError):
    code = "bad_request"
    http_status = 400
    retryable = False


class Unsupported(BadRequest):
    """The request asks for something this engine cannot give (``param`` names it)."""

    code = "unsupported_parameter"


class ContextTooLong(BadRequest):
    """The prompt does not fit the model's context window."""

    code = "context_length_exceeded"
    retryable = True  # another model with a larger window may take it


class AuthFailed(EngineError):
    """The backend refused our credentials (401/403)."""

    code = "upstream_auth_failed"
    http_status = 502


class EngineUnavailable(EngineError):
    """No engine can serve this endpoint here (kind not registered, package missing)."""

    code = "engine_unavailable"
    http_status = 503
