"""Every route piagent serves, from each door's own list, and `/openapi.json` built from each door's rows."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from piagent.http import conversations, native, ollama, ollama_generate, ollama_models, openai, page
from piagent.http.openapi import JSON, Body, Endpoint, build_openapi
from piagent.http.requests import get_runtime
from piagent.http.responses import ENCODER
from piagent.version import __version__

# What /openapi.json says about each route: one row per (method, path) of build_routes() (a test checks).
API: tuple[Endpoint, ...] = (
    *page.API,
    *native.API,
    *conversations.API,
    *openai.API,
    *ollama.API,
    *ollama_generate.API,
    *ollama_models.API,
    Endpoint("GET", "/openapi.json", "This document (OpenAPI 3.1)", ok=(Body(JSON, dict[str, Any]),)),
    Endpoint(
        "GET",
        "/metrics",
        "Counters, histograms and gauges in Prometheus' text format (only with PIAGENT_METRICS on)",
        ok=(Body("text/plain", str, "Prometheus' text exposition format 0.0.4"),),
    ),
)


def _document(routes: Sequence[BaseRoute], root: str) -> bytes:
    # Only the rows of routes this app serves: the chat page and /metrics, for two, can be turned off.
    served = {(method, route.path) for route in routes if isinstance(route, Route) for method in route.methods or ()}
    endpoints = [endpoint for endpoint in API if (endpoint.method, endpoint.path) in served]
    return ENCODER.encode(build_openapi(endpoints, "piagent", __version__, server=root or "/"))


async def openapi(request: Request) -> Response:
    """`GET /openapi.json`: the OpenAPI 3.1 document of every endpoint, from the table above, built once."""
    root: str = request.scope.get("root_path", "")
    cache = get_runtime(request).openapi
    build = partial(_document, request.app.routes, root)
    body = cache.get(root, build) if cache is not None else build()
    return Response(body, media_type=JSON)


def build_routes(chat_page: page.ChatPage | None = None) -> list[Route]:
    """Every endpoint piagent serves (`GET /` only with a chat page); each needs its row in `API` (a test checks)."""
    home = [Route("/", chat_page.endpoint, methods=["GET"])] if chat_page is not None else []
    return [
        *home,
        *native.routes(),
        *conversations.routes(),
        *openai.routes(),
        *ollama.routes(),
        *ollama_generate.routes(),
        *ollama_models.routes(),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
