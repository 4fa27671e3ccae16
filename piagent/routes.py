"""HTTP in, HTTP out: the endpoints, which only ever talk to the chat service."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple, TypeVar

import httpx
import msgspec
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from piagent import __version__
from piagent.agents import Agents
from piagent.chat import ChatService
from piagent.exceptions import (
    InvalidJSON,
    MethodNotAllowed,
    NotFound,
    NotStarted,
    PayloadTooLarge,
    PiagentError,
    RequestError,
    StoreUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from piagent.memory import Conversation, MemoryStore
from piagent.openapi import JSON, NDJSON, SSE, Body, Endpoint, Param, build_openapi
from piagent.page import ChatPage
from piagent.responses import JSONResponse, error_response_for
from piagent.responses import route_path as route_path  # the middleware's, before routing
from piagent.schemas import (
    AgentInfo,
    AgentList,
    ChatRequest,
    ChatResponse,
    ConversationList,
    DoneEvent,
    ErrorDetail,
    ErrorEvent,
    Health,
    StoreHealth,
    TokenEvent,
)
from piagent.schemas_ollama import OllamaChatRequest, OllamaChatResponse, OllamaTags, OllamaVersion
from piagent.schemas_openai import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model, ModelList
from piagent.settings import Settings
from piagent.streaming import ReplyStream, choose_format, until_disconnect

T = TypeVar("T")
STATE_KEY = "piagent"
# Where an authentication layer puts the caller's identity (never the raw key) for conversation ownership.
OWNER_SCOPE_KEY = "piagent.owner"
_CHAT_REQUEST = msgspec.json.Decoder(ChatRequest)


class Runtime(NamedTuple):
    """What the lifespan opened, handed to every request as lifespan state."""

    settings: Settings
    agents: Agents
    chat: ChatService
    store: MemoryStore | None
    agent_list: AgentList
    started_at: float = 0.0  # Unix time the lifespan started (the front doors' "created" dates)
    client: httpx.AsyncClient | None = None  # the one shared upstream client (for tests and diagnostics)


def build_agent_list(agents: Agents) -> AgentList:
    """The `GET /agents` body; agents never change after start-up, so it is built once."""
    return AgentList([AgentInfo(a.name, a.description, a.model) for a in agents.values()], agents.default)


def owner_of(request: Request) -> str:
    """Who owns the conversations this request touches; "" when API keys are off."""
    owner: str = request.scope.get(OWNER_SCOPE_KEY, "")
    return owner


def wants_deep_health(query: QueryParams) -> bool:
    """Whether `/health` is asked to check the upstream too (`?deep=1`, `true` or `yes`)."""
    return query.get("deep", "").lower() in ("1", "true", "yes")


def get_runtime(request: Request) -> Runtime:
    """The lifespan's Runtime, or a clear error when the host never ran piagent's lifespan."""
    runtime: Runtime | None = request.scope.get("state", {}).get(STATE_KEY)
    if runtime is None:
        raise NotStarted(
            "piagent's lifespan has not run: when mounting piagent inside another app, "
            "pass lifespan=piagent_app.router.lifespan_context to the host app (README: Embedding)"
        )
    return runtime


async def read_json_body(request: Request, limit: int) -> bytes:
    """The body, if declared as JSON (or not declared) and no longer than `limit` bytes."""
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise UnsupportedMediaType(
                f"expected Content-Type: application/json, got {media_type or 'nothing'!r} "
                "(with curl: -H 'Content-Type: application/json')"
            )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; at most {limit} are allowed")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes, the most allowed")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_body(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode a request body with a typed decoder: a 400 for JSON syntax, a 422 naming the field otherwise."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(str(exc)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc}") from exc


def decode_chat_request(body: bytes, max_message_chars: int, max_tokens: int) -> ChatRequest:
    """Decode and validate `POST /chat`; a 400 for JSON syntax, a 422 naming the field otherwise."""
    chat_request = decode_body(_CHAT_REQUEST, body)
    if len(chat_request.message) > max_message_chars:
        raise ValidationFailed(
            f"the message is {len(chat_request.message)} characters; at most {max_message_chars} "
            "are allowed - at `$.message`"
        )
    options = chat_request.options
    if options is not None and options.max_tokens is not None and options.max_tokens > max_tokens:
        raise ValidationFailed(
            f"max_tokens is {options.max_tokens}; at most {max_tokens} are allowed - at `$.options.max_tokens`"
        )
    return chat_request


async def _store_health(store: MemoryStore) -> StoreHealth:
    try:
        await store.check()
    except StoreUnavailable as exc:
        return StoreHealth(store.name, "unavailable", exc.message)
    return StoreHealth(store.name, "ok")


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
    deep = wants_deep_health(request.query_params)
    store = runtime.store
    upstreams = await runtime.chat.check_upstreams() if deep else None
    store_health = await _store_health(store) if deep and store is not None else None
    conversations = 0 if store is None else await _count_conversations(store, store_health)
    errors = [
        ErrorDetail("upstream_unavailable", upstream.error or f"{upstream.name} is not healthy")
        for upstream in upstreams or ()
        if upstream.status != "ok"
    ]
    if store_health is not None and store_health.status != "ok":
        errors.append(
            ErrorDetail("store_unavailable", store_health.error or f"memory store {store_health.name!r} is down")
        )
    if not errors:
        return JSONResponse(Health("ok", __version__, len(runtime.agents), conversations, upstreams, store_health))
    # One error: the first one's code (upstreams first, as before), every failing part in the message.
    error = ErrorDetail(errors[0].code, "; ".join(error.message for error in errors))
    body = Health("degraded", __version__, len(runtime.agents), conversations, upstreams, store_health, error)
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
    limiter = runtime.chat.limiter
    if not chat_request.stream:
        reply = await until_disconnect(request.receive, partial(runtime.chat.complete, prepared), limiter)
        return JSONResponse(reply, headers={"X-Conversation-Id": prepared.conversation_id})
    replies = runtime.chat.stream(prepared)
    # The first item is awaited before any byte is sent, so a failure up to the first token (a full
    # queue included) still gets its real status code instead of a 200 with an error inside.
    first = await until_disconnect(request.receive, replies.__anext__, limiter)
    stream_format = choose_format(request.headers.get("accept", ""))
    return ReplyStream(first, replies, stream_format, prepared.conversation_id, limiter)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (and any other HTTPException) in piagent's error shape."""
    assert isinstance(exc, HTTPException)
    error: RequestError
    if exc.status_code == 404:
        error = NotFound(f"no route for {request.method} {request.url.path}")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    else:
        error = RequestError(str(exc.detail))
        error.status_code = exc.status_code
    return error_response_for(request, error, headers=exc.headers)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Anything unforeseen: a 500 in the usual shape, no traceback (the server log has it).

    Starlette re-raises the exception after this response so the server logs it, and uvicorn then
    closes the connection: `Connection: close` tells the client not to send its next request on it.
    """
    error = PiagentError("piagent hit an unexpected error; the server log has the details")
    return error_response_for(request, error, headers={"Connection": "close"})


async def openapi(request: Request) -> Response:
    """`GET /openapi.json`: the OpenAPI 3.1 document of every endpoint, from the table below."""
    root = request.scope.get("root_path", "")
    # Only the rows of routes this app serves: the chat page, for one, can be turned off.
    served = {
        (method, route.path)
        for route in request.app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
    }
    endpoints = [endpoint for endpoint in API if (endpoint.method, endpoint.path) in served]
    return JSONResponse(build_openapi(endpoints, "piagent", __version__, server=root or "/"))


def build_routes(chat_page: ChatPage | None = None) -> list[Route]:
    """Every endpoint piagent serves (`GET /` only with a chat page); each needs its row in `API` (a test checks)."""
    # Imported here: these modules build on this module's helpers (get_runtime, owner_of, read_json_body).
    from piagent import routes_ollama, routes_openai
    from piagent.conversations import conversation_routes

    page = [Route("/", chat_page.endpoint, methods=["GET"])] if chat_page is not None else []
    return [
        *page,
        Route("/health", health, methods=["GET"]),
        Route("/agents", list_agents, methods=["GET"]),
        Route("/chat", chat, methods=["POST"]),
        *conversation_routes(),
        *routes_openai.build_routes(),
        *routes_ollama.build_routes(),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]


_UPSTREAM_ERRORS = (502, 503, 504)
_BODY_ERRORS = (400, 413, 415, 422)
_CHAT_EVENTS: Any = TokenEvent | DoneEvent | ErrorEvent
# What /openapi.json says about each route: one row per (method, path) of build_routes().
API: tuple[Endpoint, ...] = (
    Endpoint("GET", "/", "The chat page (when PIAGENT_CHAT_PAGE is on)", ok=(Body("text/html", str),)),
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
        errors=(*_BODY_ERRORS, 404, *_UPSTREAM_ERRORS),
    ),
    Endpoint(
        "GET",
        "/conversations",
        "The caller's stored conversations, newest first, a page at a time",
        query=(Param("limit", "conversations per page, 1 to 100 (default 20)"), Param("before", "a page's `next`")),
        ok=(Body(JSON, ConversationList),),
        errors=(422, 503),
    ),
    Endpoint(
        "GET",
        "/conversations/{conversation_id}",
        "One stored conversation with every kept turn",
        path_params=(Param("conversation_id", "the conversation's id"),),
        ok=(Body(JSON, Conversation),),
        errors=(404, 503),
    ),
    Endpoint(
        "DELETE",
        "/conversations/{conversation_id}",
        "Forget one stored conversation",
        path_params=(Param("conversation_id", "the conversation's id"),),
        status=204,
        errors=(404, 503),
    ),
    Endpoint(
        "POST",
        "/v1/chat/completions",
        "OpenAI-compatible chat: model is an agent, whose system prompt goes before the messages; stateless",
        request=ChatCompletionRequest,
        ok=(
            Body(JSON, ChatCompletion, "stream false"),
            Body(SSE, ChatCompletionChunk, "stream true: data: chunks, then data: [DONE]"),
        ),
        errors=(*_BODY_ERRORS, 404, *_UPSTREAM_ERRORS),
    ),
    Endpoint("GET", "/v1/models", "OpenAI-compatible model list: every agent", ok=(Body(JSON, ModelList),)),
    Endpoint(
        "GET",
        "/v1/models/{model}",
        "OpenAI-compatible model: one agent",
        path_params=(Param("model", "the agent's name"),),
        ok=(Body(JSON, Model),),
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/api/chat",
        "Ollama-compatible chat: model is an agent; streams NDJSON unless stream is false; stateless",
        request=OllamaChatRequest,
        ok=(
            Body(NDJSON, OllamaChatResponse, "stream true (the default): one line per piece, done on the last"),
            Body(JSON, OllamaChatResponse, "stream false"),
        ),
        errors=(*_BODY_ERRORS, 404, *_UPSTREAM_ERRORS),
    ),
    Endpoint("GET", "/api/tags", "Ollama-compatible model list: every agent", ok=(Body(JSON, OllamaTags),)),
    Endpoint("GET", "/api/version", "Ollama-compatible version: piagent's", ok=(Body(JSON, OllamaVersion),)),
    Endpoint("GET", "/openapi.json", "This document (OpenAPI 3.1)", ok=(Body(JSON, dict[str, Any]),)),
)
