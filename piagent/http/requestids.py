"""Request ids (X-Request-Id in, echoed out) and, for the JSON logs, one access line per request carrying it."""

from __future__ import annotations

import logging
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from piagent.http.requests import ARRIVED_KEY, OWNER_SCOPE_KEY, REQUEST_ID_KEY, route_path
from piagent.logs import REQUEST_ID

# A client's id is kept only when it is a plain token (what proxies and tracing tools send: UUIDs, hex,
# base64url), whole-string matched and bounded: anything else could forge log lines or bloat them.
_VALID = re.compile(r"[A-Za-z0-9._:+=-]{1,128}")
access_logger = logging.getLogger("piagent.access")


def presented_request_id(scope: Scope) -> str | None:
    """The client's X-Request-Id when it is valid, else None."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID.fullmatch(text) else None
    return None


class RequestIdMiddleware:
    """Gives every HTTP request an id (the client's valid X-Request-Id, or 16 random hex digits), echoed as
    X-Request-Id on the response; with `access_log`, logs one line per request: id, method, path, status,
    duration and the caller's owner id (never the key, never the content)."""

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = presented_request_id(scope) or secrets.token_hex(8)
        scope[REQUEST_ID_KEY] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        # Every line logged while this request is served carries its id (piagent.logs.RequestIdFilter).
        token = REQUEST_ID.set(request_id)
        started = scope[ARRIVED_KEY] = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Starlette's outermost middleware answers it with a 500 after this line is written.
            status = status or 500
            raise
        finally:
            REQUEST_ID.reset(token)
            if self.access_log:
                method, path = scope["method"], route_path(scope)
                fields = {
                    "request_id": request_id,
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "owner": scope.get(OWNER_SCOPE_KEY) or None,
                }
                access_logger.info("%s %s %d", method, path, status, extra=fields)
