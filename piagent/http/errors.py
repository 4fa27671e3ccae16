"""Every exception handler: piagent's errors, Starlette's 404/405 and the unforeseen, in the route's error shape."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from piagent.exceptions import MethodNotAllowed, NotFound, PiagentError, RequestError, shorten
from piagent.http.requests import REQUEST_ID_KEY
from piagent.http.responses import error_response_for


async def handle_piagent_error(request: Request, exc: Exception) -> Response:
    """Exception handler for `PiagentError` and every subclass (Starlette walks the MRO)."""
    assert isinstance(exc, PiagentError)
    return error_response_for(request, exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (and any other HTTPException) in piagent's error shape."""
    assert isinstance(exc, HTTPException)
    error: RequestError
    if exc.status_code == 404:
        error = NotFound(f"no route for {shorten(request.method)} {shorten(request.url.path)}")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"{shorten(request.method)} is not allowed on {shorten(request.url.path)}")
    else:
        error = RequestError(str(exc.detail))
        error.status_code = exc.status_code
    return error_response_for(request, error, headers=exc.headers)


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client left while its body was read (or the body timeout closed it): nobody reads an answer.

    Without this handler Starlette's ClientDisconnect would reach the server log as an unexpected error.
    """
    return Response(status_code=499)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Anything unforeseen: a 500 in the usual shape, no traceback (the server log has it).

    Starlette re-raises the exception after this response so the server logs it, and uvicorn then
    closes the connection: `Connection: close` tells the client not to send its next request on it.
    This handler runs outside the request-id middleware (Starlette's outermost layer calls it), so the
    X-Request-Id header is added here, from the id that middleware left on the scope.
    """
    error = PiagentError("piagent hit an unexpected error; the server log has the details")
    headers = {"Connection": "close"}
    request_id: str | None = request.scope.get(REQUEST_ID_KEY)
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return error_response_for(request, error, headers=headers)
