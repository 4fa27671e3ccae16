"""piagent's own door: `/health`, `/agents` and `POST /chat` with conversation memory."""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from piagent.chat import ChatService
from piagent.exceptions import StoreUnavailable, ValidationFailed
from piagent.http.formats import choose_format
from piagent.http.openapi import BODY_ERRORS, JSON, NDJSON, SSE, UPSTREAM_ERRORS, Body, Endpoint, Param
from piagent.http.requests import (
    REQUEST_ID_KEY,
    DeepHealth,
    decode_body,
    get_runtime,
    owner_of,
    read_json_body,
    wants_deep_health,
)
from piagent.http.responses import JSONResponse
from piagent.http.streaming import ReplyStream, reply
from piagent.schemas import (
    AgentList,
    ChatRequest,
    ChatResponse,
    DoneEvent,
    ErrorDetail,
    ErrorEvent,
    Health,
    MachineHealth,
    StoreHealth,
    TokenEvent,
    UpstreamHealth,
)
from piagent.stores.base import MemoryStore
from piagent.version import __version__

_CHAT_REQUEST = msgspec.json.Decoder(ChatRequest)


def decode_chat_request(body: bytes, max_message_chars: int, max_tokens: int) -> ChatRequest:
    """Decode and validate `POST /chat`; a 400 for JSON syntax, a 422 naming the field otherwise."""
    chat_request = decode_body(_CHAT_REQUEST, body)
    if len(chat_request.message) > max_message_chars:
        raise ValidationFailed.over_limit(
            "the message", len(chat_request.message), max_message_chars, "$.message", " characters"
        )
    options = chat_request.options
    if options is not None and options.max_tokens is not None and options.max_tokens > max_tokens:
        raise ValidationFailed.over_limit("max_tokens", options.max_tokens, max_tokens, "$.options.max_tokens")
    return chat_request


async def _store_health(store: MemoryStore) -> StoreHealth:
    try:
        await store.check()
    except StoreUnavailable as exc:
        return StoreHealth(store.name, "unavailable", exc.message)
    return StoreHealth(store.name, "ok")


async def _deep_checks(chat: ChatService, store: MemoryStore | None) -> DeepHealth:
    """Every upstream and the store, asked at once: the part of `/health?deep=1` that costs."""
    upstreams = await chat.check_upstreams()
    return upstreams, await _store_health(store) if store is not None else None


async def _count_conversations(store: MemoryStore, store_health: StoreHealth | None) -> int | None:
    """None when the store cannot be asked: plain `/health` stays 200 (the process serves); deep reports it."""
    if store_health is not None and store_health.status != "ok":
        return None
    try:
        return await store.count()
    except StoreUnavailable:
        return None


async def health(request: Request) -> Response:
    """`GET /health`: the server is up; `?deep=1` also asks every upstream and the store (503 if one is down)."""
    runtime = get_runtime(request)
    store = runtime.store
    upstreams: list[UpstreamHealth] | None = None
    store_health: StoreHealth | None = None
    deep = wants_deep_health(request.query_params)
    if deep:
        checks = partial(_deep_checks, runtime.chat, store)
        cache = runtime.deep_health
        upstreams, store_health = await (cache.get(checks) if cache is not None else checks())
    conversations = 0 if store is None else await _count_conversations(store, store_health)
    # MCP servers are shown, never started here, and never make piagent itself unhealthy: a tool source is down.
    mcp = runtime.mcp.status() if deep and runtime.mcp is not None else None
    errors = [
        ErrorDetail("upstream_unavailable", upstream.error or f"{upstream.name} is not healthy")
        for upstream in upstreams or ()
        if upstream.status != "ok"
    ]
    if store_health is not None and store_health.status != "ok":
        errors.append(
            ErrorDetail("store_unavailable", store_health.error or f"memory store {store_health.name!r} is down")
        )
    machine = runtime.machine.read() if runtime.machine is not None else None
    machine = machine if machine != MachineHealth() else None  # neither file exists: nothing to show
    if not errors:
        body = Health(
            "ok", __version__, len(runtime.agents), conversations, upstreams, store_health, mcp=mcp, machine=machine
        )
        return JSONResponse(body)
    # One error: the first one's code (upstreams first, as before), every failing part in the message.
    request_id: str | None = request.scope.get(REQUEST_ID_KEY)
    error = ErrorDetail(errors[0].code, "; ".join(error.message for error in errors), request_id)
    body = Health(
        "degraded", __version__, len(runtime.agents), conversations, upstreams, store_health, error, mcp, machine
    )
    return JSONResponse(body, status_code=503)


async def list_agents(request: Request) -> Response:
    """`GET /agents`."""
    return JSONResponse(get_runtime(request).agent_list)


async def chat(request: Request) -> Response | ReplyStream:
    """`POST /chat`: a whole reply as JSON, or streamed as plain text, SSE or NDJSON."""
    runtime = get_runtime(request)
    body = await read_json_body(request, runtime.settings.max_body_bytes)
    settings = runtime.settings
    chat_request = decode_chat_request(body, settings.max_message_chars, settings.max_tokens)
    prepared = await runtime.chat.prepare(chat_request, owner_of(request))
    conversation_id = prepared.conversation_id
    return await reply(
        request,
        runtime.chat,
        prepared,
        stream=chat_request.stream,
        whole=lambda whole: JSONResponse(whole, headers={"X-Conversation-Id": conversation_id}),
        stream_format=lambda: choose_format(request.headers.get("accept", "")),
        conversation_id=conversation_id,
    )


def routes() -> list[Route]:
    """The native door's routes, for `build_routes`."""
    return [
        Route("/health", health, methods=["GET"]),
        Route("/agents", list_agents, methods=["GET"]),
        Route("/chat", chat, methods=["POST"]),
    ]


_CHAT_EVENTS: Any = TokenEvent | DoneEvent | ErrorEvent
# What /openapi.json says about this door's routes.
API: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/health",
        "Whether piagent is up; with deep=1 also every upstream server and the memory store (503 if one is down)",
        query=(Param("deep", "1 to also ask every upstream server"),),
        ok=(Body(JSON, Health),),
        errors=(503,),
    ),
    Endpoint("GET", "/agents", "The agents: name, description, model", ok=(Body(JSON, AgentList),)),
    Endpoint(
        "POST",
        "/chat",
        "One message to an agent, in a remembered conversation; the reply whole or streamed (by Accept)",
        request=ChatRequest,
        ok=(
            Body(JSON, ChatResponse, "stream false"),
            Body("text/plain", str, "stream true: the reply's text as generated"),
            Body(SSE, _CHAT_EVENTS, "stream true, Accept: text/event-stream: token events, then done or error"),
            Body(NDJSON, _CHAT_EVENTS, "stream true, Accept: application/x-ndjson: the same events, one a line"),
        ),
        errors=(*BODY_ERRORS, 404, *UPSTREAM_ERRORS),
    ),
)
