"""What every handler reads from a request: the lifespan's runtime, the caller, the body. Imports no door."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

import httpx
import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.types import Scope

from piagent.agents import Agents
from piagent.chat import ChatService
from piagent.exceptions import (
    CLIP,
    InvalidJSON,
    NotStarted,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    clip,
    shorten,
)
from piagent.generations import GenerationLimiter
from piagent.hardware import Readings
from piagent.http.recent import RecentResult
from piagent.schemas import AgentList, StoreHealth, UpstreamHealth, Usage
from piagent.settings import Settings
from piagent.stores.base import MemoryStore

if TYPE_CHECKING:
    from piagent.http.openapi import DocumentCache
    from piagent.mcp.servers import McpServers

T = TypeVar("T")
# What `/health?deep=1` asks: every upstream, and the store (None without one).
DeepHealth = tuple[list[UpstreamHealth], StoreHealth | None]
STATE_KEY = "piagent"
# Where an authentication layer puts the caller's identity (never the raw key) for conversation ownership.
OWNER_SCOPE_KEY = "piagent.owner"
# Where the request-id middleware puts the request's id, for error bodies and log lines, and the
# `time.perf_counter()` of its arrival, whence the metrics time a reply.
REQUEST_ID_KEY = "piagent.request_id"
ARRIVED_KEY = "piagent.arrived"
# The scope entry holding the `send` the server gave piagent's app, under every middleware's own wrapper. Those
# wrappers act on a response's start only (its status, a header added); a streamed reply, once its start has gone
# through them, sends its body here directly: a coroutine less per wrapper on every write (see ReplyStream).
SERVER_SEND_KEY = "piagent.send"


class GenerationObserver(Protocol):
    """What counts generations, upstream failures, store and tool calls (piagent.http.metrics, imported only
    when PIAGENT_METRICS is on)."""

    def watch(self, limiter: GenerationLimiter, machine: Readings | None) -> None:
        """Read the slots and the machine from now on."""

    def generation(self, agent: str, owner: str, first_token: float | None, total: float, usage: Usage | None) -> None:
        """One generation ended after `total` seconds (its first token after `first_token`, when known)."""

    def upstream_error(self, kind: str, upstream: str) -> None:
        """An upstream failed: its error code, the upstream's name."""

    def tool_call(self, tool: str, outcome: str) -> None:
        """An agent's tool call went as `outcome` says."""

    def observe_store(self, store: MemoryStore) -> MemoryStore:
        """The store, counted."""


class Runtime(NamedTuple):
    """What the lifespan opened, handed to every request as lifespan state."""

    settings: Settings
    agents: Agents
    chat: ChatService
    store: MemoryStore | None
    agent_list: AgentList
    started_at: float = 0.0  # Unix time the lifespan started (the front doors' "created" dates)
    client: httpx.AsyncClient | None = None  # the one shared upstream client (for tests and diagnostics)
    mcp: McpServers | None = None  # the MCP servers agents take tools from, for /health?deep=1
    machine: Readings | None = None  # memory and temperature, as admission reads them
    metrics: GenerationObserver | None = None  # with PIAGENT_METRICS on
    # `/health?deep=1`'s checks, shared by concurrent callers and reused for PIAGENT_DEEP_HEALTH_CACHE seconds.
    deep_health: RecentResult[DeepHealth] | None = None
    openapi: DocumentCache | None = None  # `/openapi.json`'s bytes, built on its first request


def route_path(scope: Scope) -> str:
    """The request path inside piagent, without the prefix of a host app that mounts it."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) : len(root_path) + 1] in ("/", ""):
        return path[len(root_path) :] or "/"
    return path


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
        # A host that ran the lifespan but passed no state on (Litestar): piagent's app keeps it too.
        # scope["app"] is piagent's own Starlette app, which sets itself there on every request.
        app = request.scope.get("app")
        runtime = getattr(getattr(app, "state", None), STATE_KEY, None)
    if runtime is None:
        raise NotStarted(
            "piagent's lifespan has not run: when mounting piagent inside another app, "
            "pass lifespan=piagent_app.router.lifespan_context to the host app (README: Embedding)"
        )
    return runtime


async def read_json_body(request: Request, limit: int, any_type: bool = False) -> bytes:
    """The body, if declared as JSON (or not declared, or `any_type`) and no longer than `limit` bytes.

    `any_type` reads it as JSON whatever its Content-Type, as Ollama does (curl's `-d` sends a form type,
    litellm's async client `application/octet-stream`). That is safe only because the browser guard,
    outermost, refuses other sites' pages: a form or `text/plain` POST needs no CORS preflight.
    """
    content_type = None if any_type else request.headers.get("content-type")
    if content_type is not None:
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise UnsupportedMediaType(
                f"expected Content-Type: application/json, got {clip(media_type or 'nothing')} "
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


# msgspec quotes the offending input in some messages: an unknown field's name, an enum's value.
_QUOTED = re.compile(rf"`([^`]{{{CLIP + 1},}})`|'([^']{{{CLIP + 1},}})'")


def _clip_quoted(message: str) -> str:
    """msgspec's message with any input it quotes cut to a prefix, and the whole bounded in any case."""
    clipped = _QUOTED.sub(lambda found: repr(shorten(found[1] or found[2])), message)
    return shorten(clipped, 4 * CLIP)


def decode_body(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode a request body with a typed decoder: a 400 for JSON syntax, a 422 naming the field otherwise."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        # msgspec ends its message with the field's path, "... - at `$.options.temperature`": kept as data.
        message, at, path = str(exc).rpartition(" - at `")
        if at and path.endswith("`"):
            raise ValidationFailed(_clip_quoted(message), path[:-1]) from exc
        raise ValidationFailed(_clip_quoted(str(exc))) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # msgspec stops at Python's recursion limit (about 1,000 levels), in any field
        raise InvalidJSON("the body nests arrays or objects too deeply to be read") from exc
