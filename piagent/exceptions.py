"""Every error piagent raises on purpose, each with a stable code and the HTTP status it maps to.

One handler registered for `PiagentError` turns any of them into
`{"error": {"code": ..., "message": ...}}` with the right status; Starlette finds it along the MRO.

    PiagentError
    ├── SettingsError ............... start-up: a wrong configuration value (never served)
    ├── AgentDefinitionError ........ start-up: a prompt file that does not parse (never served)
    ├── RequestError
    │   ├── InvalidJSON ............. 400
    │   ├── CorsRefused ............. 400 (a preflight asks for a method or header not allowed)
    │   ├── Unauthorized ............ 401 (no or a wrong API key; WWW-Authenticate)
    │   ├── Forbidden ............... 403 (another site's page, or a Host name piagent does not answer to)
    │   ├── NotFound ................ 404 (unknown route)
    │   ├── MethodNotAllowed ........ 405
    │   ├── RequestTimeout .......... 408 (the request head did not arrive in time; written by the protocol)
    │   ├── PayloadTooLarge ......... 413
    │   ├── UnsupportedMediaType .... 415
    │   ├── HeadersTooLarge ......... 431 (request head over its byte or header limit; written by the protocol)
    │   ├── ValidationFailed ........ 422 (names the field)
    │   ├── AgentNotFound ........... 404 (lists the known agents)
    │   ├── ConversationNotFound .... 404 (unknown, expired or someone else's)
    │   └── RateLimited ............. 429 (this key's requests a minute; Retry-After)
    ├── Busy ........................ 503 (every generation slot and queue place is taken; Retry-After)
    ├── LowMemory ................... 503 (the machine's available memory is under the limit; Retry-After)
    ├── TooHot ...................... 503 (the SoC is over the temperature limit; Retry-After)
    ├── ShuttingDown ................ 503 (the server is stopping; generations are refused or ended)
    ├── TooManyConnections .......... 503 (over the open-connection cap; written by the protocol)
    ├── UpstreamError ............... 502 (carries the upstream's own message)
    │   ├── UpstreamUnavailable ..... 503
    │   └── UpstreamTimeout ......... 504
    ├── StoreUnavailable ............ 503 (the memory store cannot be reached or written; names it)
    └── NotStarted .................. 500 (the lifespan did not run, e.g. a mount without it)
"""

from __future__ import annotations

# Client input quoted in an error message is cut to this many characters: an error never echoes a body back.
CLIP = 64


def shorten(text: str, limit: int = CLIP) -> str:
    """The first `limit` characters of `text`, with `...` when there was more."""
    return text if len(text) <= limit else text[:limit] + "..."


def clip(text: str, limit: int = CLIP) -> str:
    """`text` as quoted in an error message: its first `limit` characters, with `...` when there was more."""
    return repr(shorten(text, limit))


class PiagentError(Exception):
    """Base of every piagent error: a machine-readable code, an HTTP status and a message for people."""

    code = "internal_error"
    status_code = 500
    # Extra response headers (Retry-After, WWW-Authenticate); None for most errors.
    headers: dict[str, str] | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SettingsError(PiagentError):
    """A configuration value is missing or not allowed; start-up stops with this one line."""

    code = "invalid_setting"


class AgentDefinitionError(PiagentError):
    """A prompt file could not be read as an agent."""

    code = "invalid_agent"


class RequestError(PiagentError):
    """The client sent something piagent cannot serve."""

    code = "bad_request"
    status_code = 400


class InvalidJSON(RequestError):
    """The body is not JSON."""

    code = "invalid_json"
    status_code = 400


class Unauthorized(RequestError):
    """The request carries no API key, or one the server does not know."""

    code = "unauthorized"
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012 - read-only, shared by every instance


class Forbidden(RequestError):
    """A browser request from another site's page, or a Host name piagent does not answer to (DNS rebinding)."""

    code = "forbidden"
    status_code = 403


class CorsRefused(RequestError):
    """A browser's CORS preflight asks for a method or header piagent does not allow."""

    code = "cors_refused"
    status_code = 400


class NotFound(RequestError):
    """No route has this path."""

    code = "not_found"
    status_code = 404


class MethodNotAllowed(RequestError):
    """The route exists but not for this method."""

    code = "method_not_allowed"
    status_code = 405


class RequestTimeout(RequestError):
    """The request head did not arrive within the head timeout."""

    code = "request_timeout"
    status_code = 408


class PayloadTooLarge(RequestError):
    """The body is over the configured byte limit."""

    code = "payload_too_large"
    status_code = 413


class UnsupportedMediaType(RequestError):
    """The body is not declared as application/json."""

    code = "unsupported_media_type"
    status_code = 415


class HeadersTooLarge(RequestError):
    """The request head is over its byte limit or has too many header fields."""

    code = "headers_too_large"
    status_code = 431


class ValidationFailed(RequestError):
    """A field has the wrong type or value; `path` names the field (`$.messages[0].content`, or a query
    parameter's name), and the message ends with it as msgspec writes it: `... - at `$.path``."""

    code = "validation_error"
    status_code = 422

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(f"{message} - at `{path}`" if path else message)
        self.path = path

    @classmethod
    def over_limit(cls, what: str, size: int, limit: int, path: str, unit: str = "") -> ValidationFailed:
        """A value past one of piagent's limits: `the message is 11 characters; at most 10 are allowed`."""
        return cls(f"{what} is {size}{unit}; at most {limit} are allowed", path)


class AgentNotFound(RequestError):
    """The requested agent does not exist; the message lists the known ones."""

    code = "agent_not_found"
    status_code = 404


class ConversationNotFound(RequestError):
    """The conversation does not exist, has expired, or belongs to someone else (indistinguishable on purpose)."""

    code = "conversation_not_found"
    status_code = 404


class RateLimited(RequestError):
    """This caller sent more requests than its per-minute allowance; Retry-After says when to come back."""

    code = "rate_limited"
    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class Busy(PiagentError):
    """Every generation slot and every place in the wait queue is taken; Retry-After estimates when one frees."""

    code = "busy"
    status_code = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class LowMemory(PiagentError):
    """The machine has less memory available than PIAGENT_MIN_AVAILABLE_MB; a generation could wake the OOM killer."""

    code = "low_memory"
    status_code = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class TooHot(PiagentError):
    """The SoC is hotter than PIAGENT_MAX_TEMPERATURE_C: it throttles, and a generation would heat it further."""

    code = "too_hot"
    status_code = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class ShuttingDown(PiagentError):
    """The server is stopping: no new generation starts, and the ones past the grace period are ended."""

    code = "shutting_down"
    status_code = 503


class TooManyConnections(PiagentError):
    """Every connection piagent allows itself is open; the new one is answered and closed at once."""

    code = "too_many_connections"
    status_code = 503


class UpstreamError(PiagentError):
    """The model server answered with an error, or with something that is not its protocol."""

    code = "upstream_error"
    status_code = 502


class UpstreamUnavailable(UpstreamError):
    """The model server could not be reached."""

    code = "upstream_unavailable"
    status_code = 503


class UpstreamTimeout(UpstreamError):
    """The model server did not answer in time."""

    code = "upstream_timeout"
    status_code = 504


class StoreUnavailable(PiagentError):
    """The conversation store is down (Redis unreachable, SQLite file not writable); nothing was lost."""

    code = "store_unavailable"
    status_code = 503

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"memory store {store!r} is unavailable: {reason}")
        self.store = store


class NotStarted(PiagentError):
    """A request arrived but the app's lifespan never ran, so nothing is open to serve it."""

    code = "not_started"
    status_code = 500
