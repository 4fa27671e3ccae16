"""The wire bodies of piagent's own API, as msgspec Structs (requests strict, responses lean)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec


def whole_string(pattern: str, max_length: int | None = None) -> msgspec.Meta:
    r"""A constraint the whole string must match: every pattern a wire schema checks is written with it.

    msgspec searches (`re.search`), and there `^...$` accepts a trailing newline (`$` matches before
    it): "abc\n" passed as a conversation id and broke the reply's header. `\A...\Z` anchors the very
    ends (`/openapi.json` spells them `^...$`, whole-string in JSON Schema's ECMA-262 regexes).
    """
    if "|" in pattern:
        raise ValueError("group an alternation before anchoring it")
    return msgspec.Meta(pattern=rf"\A{pattern}\Z", max_length=max_length)


ConversationId = Annotated[str, whole_string(r"[A-Za-z0-9_-]{1,64}")]
AgentName = Annotated[str, whole_string(r"[a-z0-9][a-z0-9_-]*", max_length=64)]


class ChatOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Sampling options a client may set per request; unset ones fall back to the agent's."""

    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    seed: int | None = None
    stop: list[Annotated[str, msgspec.Meta(min_length=1, max_length=200)]] | None = None


class ChatRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /chat`: one user message to an agent, in a conversation or a new one."""

    message: Annotated[str, msgspec.Meta(min_length=1)]
    agent: AgentName | None = None
    conversation_id: ConversationId | None = None
    stream: bool = False
    options: ChatOptions | None = None


class Usage(msgspec.Struct):
    """Token counts as the model server reported them (0 when it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class ToolCall(msgspec.Struct, frozen=True):
    """A function call the model asked for; `arguments` is a JSON object as text (OpenAI's form)."""

    id: str
    name: str
    arguments: str


class Timings(msgspec.Struct, frozen=True, omit_defaults=True):
    """Where the model server spent its time, in nanoseconds, as Ollama reports it (0: not reported)."""

    load_duration: int = 0
    prompt_eval_duration: int = 0
    eval_duration: int = 0


class ChatResponse(msgspec.Struct, omit_defaults=True):
    """The non-streaming reply to `POST /chat`; `tool_calls` when the model asked for any instead of replying."""

    conversation_id: str
    agent: str
    model: str
    reply: str
    done_reason: str | None
    usage: Usage
    tool_calls: list[ToolCall] | None = None
    timings: Timings | None = None
    steps: list[ToolStep] | None = None  # the tools the agent ran on its way to the reply


class TokenEvent(msgspec.Struct, tag_field="event", tag="token"):
    """A piece of the reply as generated (SSE `token`, NDJSON line)."""

    text: str


class QueuedEvent(msgspec.Struct, tag_field="event", tag="queued"):
    """The request waits for a generation slot: `position` 1 is next (`ahead` 0); sent again as it moves up."""

    position: int
    ahead: int


class DoneEvent(msgspec.Struct, tag_field="event", tag="done"):
    """The reply is complete."""

    conversation_id: str
    done_reason: str | None
    usage: Usage


class ErrorEvent(msgspec.Struct, tag_field="event", tag="error", omit_defaults=True):
    """The stream ended early; the status was already sent, so the error travels in-band (with the request's id)."""

    code: str
    message: str
    request_id: str | None = None


class ToolStep(msgspec.Struct, frozen=True, omit_defaults=True):
    """One tool the agent ran while replying: the call, whether it worked and a short preview of its result."""

    id: str
    name: str
    arguments: str
    ok: bool | None = None  # None: the reply ended before the tool did
    preview: str = ""


class ToolCallEvent(msgspec.Struct, tag_field="event", tag="tool_call"):
    """A step of the agent's tool loop: it calls a tool (`arguments` is the JSON object as text)."""

    id: str
    name: str
    arguments: str


class ToolResultEvent(msgspec.Struct, tag_field="event", tag="tool_result"):
    """The result of a tool call, as the model got it: whether it worked, and a short preview."""

    id: str
    name: str
    ok: bool
    preview: str


class AgentInfo(msgspec.Struct):
    """One agent as `GET /agents` lists it."""

    name: str
    description: str
    model: str


class AgentList(msgspec.Struct):
    """`GET /agents`: every agent, and the one a request without `agent` gets."""

    agents: list[AgentInfo]
    default: str


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    """What went wrong, in a stable code and words for people, and the request's id (its X-Request-Id)."""

    code: str
    message: str
    request_id: str | None = None


class UpstreamHealth(msgspec.Struct, omit_defaults=True):
    """One model server as `GET /health?deep=1` saw it, named but never by URL."""

    name: str
    status: Literal["ok", "unavailable", "error"]
    version: str | None = None
    error: str | None = None
    in_flight: int | None = None  # requests piagent has open on it right now


class StoreHealth(msgspec.Struct, omit_defaults=True):
    """The memory store as `GET /health?deep=1` saw it."""

    name: str
    status: Literal["ok", "unavailable"]
    error: str | None = None


class McpServerHealth(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One MCP server as `/health?deep=1` and `piagent check` show it (states: idle, starting, ok, backoff,
    down, closed); `retry_in` is the seconds until a server that failed is tried again."""

    name: str
    transport: str
    state: str
    tools: int = 0
    restarts: int = 0
    last_error: str = ""
    retry_in: float = 0.0


class MachineHealth(msgspec.Struct, omit_defaults=True):
    """The machine as admission last read it (`/proc/meminfo`, thermal zone 0); a field is absent without its file."""

    available_mb: int | None = None
    temperature_c: float | None = None


class Health(msgspec.Struct, omit_defaults=True):
    """`GET /health`; `conversations` is left out when the store cannot be asked."""

    status: Literal["ok", "degraded"]
    version: str
    agents: int
    conversations: int | None = None
    upstreams: list[UpstreamHealth] | None = None  # only with ?deep=1
    store: StoreHealth | None = None
    error: ErrorDetail | None = None
    mcp: list[McpServerHealth] | None = None  # only with ?deep=1, when MCP servers are configured
    machine: MachineHealth | None = None


class ErrorBody(msgspec.Struct):
    """Every error response: `{"error": {"code", "message", "request_id"}}`."""

    error: ErrorDetail
