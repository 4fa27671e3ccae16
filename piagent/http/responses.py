"""HTTP responses whose bodies are msgspec-encoded, and the one place errors become responses.

An error takes the shape its route's clients read: OpenAI's `{"error": {"message", "type", "param",
"code"}}` under `/v1/`, Ollama's `{"error": "..."}` under `/api/`, piagent's own everywhere else; each
carries the request's id (`request_id`, as in its X-Request-Id header) where its clients tolerate a field more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from piagent.exceptions import AgentNotFound, PiagentError, ValidationFailed
from piagent.http.ollama_schemas import OllamaError
from piagent.http.openai_schemas import OpenAIErrorBody, OpenAIErrorDetail
from piagent.http.requests import REQUEST_ID_KEY, route_path
from piagent.schemas import ErrorBody, ErrorDetail

# msgspec encoders hold no per-call state; one shared instance is the documented fast path.
ENCODER = msgspec.json.Encoder()


class JSONResponse(Response):
    """Like Starlette's JSONResponse, rendered by msgspec (Structs, lists, dicts)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return ENCODER.encode(content)


def error_response(
    exc: PiagentError, headers: Mapping[str, str] | None = None, request_id: str | None = None
) -> JSONResponse:
    """The JSON error body and status for one of piagent's errors, with its own headers (Retry-After, ...)."""
    body = ErrorBody(ErrorDetail(exc.code, exc.message, request_id))
    if exc.headers is not None:
        headers = {**exc.headers, **headers} if headers else exc.headers
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def _openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_error(exc: PiagentError, request_id: str | None = None) -> OpenAIErrorBody:
    """piagent's error in OpenAI's shape: an unknown agent is OpenAI's `model_not_found`, a field is `param`."""
    param = None
    if isinstance(exc, ValidationFailed) and exc.path is not None:
        param = exc.path.removeprefix("$").removeprefix(".") or None
    code = "model_not_found" if isinstance(exc, AgentNotFound) else exc.code
    return OpenAIErrorBody(OpenAIErrorDetail(exc.message, _openai_type(exc.status_code), param, code, request_id))


def openai_error_response(
    exc: PiagentError, headers: Mapping[str, str] | None = None, request_id: str | None = None
) -> JSONResponse:
    """The JSON error body and status for the OpenAI-compatible routes."""
    return JSONResponse(openai_error(exc, request_id), status_code=exc.status_code, headers=headers)


def ollama_error_response(
    exc: PiagentError, headers: Mapping[str, str] | None = None, request_id: str | None = None
) -> JSONResponse:
    """The JSON error body and status for the Ollama-compatible routes (Ollama's clients read `error` as text)."""
    return JSONResponse(OllamaError(exc.message, request_id), status_code=exc.status_code, headers=headers)


ErrorRenderer = Callable[[PiagentError, Mapping[str, str] | None, str | None], Response]
# Path prefixes whose clients expect another API's error shape; everything else gets piagent's.
_DIALECTS: tuple[tuple[str, ErrorRenderer], ...] = (
    ("/v1/", openai_error_response),
    ("/api/", ollama_error_response),
)


def error_response_for(request: Request, exc: PiagentError, headers: Mapping[str, str] | None = None) -> Response:
    """The error response in the shape the route's clients expect."""
    if exc.headers is not None:  # Retry-After, WWW-Authenticate: in every dialect
        headers = {**exc.headers, **headers} if headers else exc.headers
    scope = request.scope
    request_id: str | None = scope.get(REQUEST_ID_KEY)
    path = route_path(scope)
    for prefix, render in _DIALECTS:
        if path.startswith(prefix):
            return render(exc, headers, request_id)
    return error_response(exc, headers, request_id)
