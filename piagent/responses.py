"""HTTP responses whose bodies are msgspec-encoded, and the one place errors become responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from piagent.exceptions import PiagentError
from piagent.schemas import ErrorBody, ErrorDetail

# msgspec encoders hold no per-call state; one shared instance is the documented fast path.
ENCODER = msgspec.json.Encoder()


class JSONResponse(Response):
    """Like Starlette's JSONResponse, rendered by msgspec (Structs, lists, dicts)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return ENCODER.encode(content)


def error_response(exc: PiagentError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The JSON error body and status for one of piagent's errors, with its own headers (Retry-After, ...)."""
    body = ErrorBody(ErrorDetail(exc.code, exc.message))
    if exc.headers is not None:
        headers = {**exc.headers, **headers} if headers else exc.headers
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


async def handle_piagent_error(request: Request, exc: Exception) -> Response:
    """Exception handler for `PiagentError` and every subclass (Starlette walks the MRO)."""
    assert isinstance(exc, PiagentError)
    return error_response(exc)
