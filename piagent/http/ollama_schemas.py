"""The wire bodies of the Ollama-compatible front door (`/api/...`), as msgspec Structs.

Requests ignore fields they do not know (`think`, `keep_alive`, load-time options): Ollama's clients
send them, and the agent, not the client, decides how the model runs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from piagent.http.openai_schemas import FunctionDefinition, FunctionName

StopText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class OllamaFunctionCall(msgspec.Struct, kw_only=True):
    """A function the model called, its arguments as a JSON object (not a string, unlike OpenAI's)."""

    name: FunctionName
    arguments: dict[str, Any] = {}


class OllamaToolCall(msgspec.Struct, kw_only=True):
    """One tool call of an assistant message sent back in the history."""

    function: OllamaFunctionCall


class OllamaMessage(msgspec.Struct, kw_only=True):
    """One message the client sends (its history included); an assistant message may carry its
    `tool_calls`, and a `tool` message answers one, naming the function in `tool_name`."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class OllamaTool(msgspec.Struct, kw_only=True):
    """One entry of `tools`, as in OpenAI's API: `{"type": "function", "function": {...}}`."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


class OllamaOptions(msgspec.Struct, kw_only=True):
    """The sampling options a client may set; `num_predict` <= 0 (Ollama's "no limit") keeps the agent's."""

    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    seed: int | None = None
    stop: list[StopText] | None = None
    num_predict: Annotated[int, msgspec.Meta(ge=-2, le=1_000_000)] | None = None


class OllamaChatRequest(msgspec.Struct, kw_only=True):
    """`POST /api/chat`: `model` names a piagent agent; `stream` defaults to true, as in Ollama."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: Annotated[list[OllamaMessage], msgspec.Meta(min_length=1)]
    stream: bool = True
    options: OllamaOptions | None = None
    tools: list[OllamaTool] | None = None
    format: Literal["", "json"] | dict[str, Any] | None = None


class OllamaReplyFunction(msgspec.Struct):
    """A function the model calls; `arguments` is a JSON object."""

    name: str
    arguments: Any


class OllamaReplyToolCall(msgspec.Struct):
    """One tool call of the reply; Ollama sends each whole, in one line."""

    function: OllamaReplyFunction


class OllamaReplyMessage(msgspec.Struct, omit_defaults=True):
    """The reply (a piece of it when streaming); `tool_calls` on the line that carries them."""

    role: Literal["assistant"]
    content: str
    tool_calls: list[OllamaReplyToolCall] | None = None


class OllamaChatResponse(msgspec.Struct, omit_defaults=True):
    """One NDJSON line of a streamed reply, or the whole reply with `"stream": false`; counts on the last."""

    model: str
    created_at: str
    message: OllamaReplyMessage
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class OllamaModelDetails(msgspec.Struct):
    """What Ollama says about a model's weights; for an agent, its provider and upstream model."""

    parent_model: str
    format: str
    family: str
    families: list[str] | None
    parameter_size: str
    quantization_level: str


class OllamaModel(msgspec.Struct):
    """One agent, seen as a model."""

    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: OllamaModelDetails


class OllamaTags(msgspec.Struct):
    """`GET /api/tags`: every agent."""

    models: list[OllamaModel]


class OllamaVersion(msgspec.Struct):
    """`GET /api/version`: piagent's own version."""

    version: str


class OllamaError(msgspec.Struct, omit_defaults=True):
    """Ollama's error shape, on `/api/...` and as the last line of a stream that failed midway; `request_id`
    beside it (Ollama's clients read `error` alone and ignore other fields)."""

    error: str
    request_id: str | None = None


class OllamaGenerateRequest(msgspec.Struct, kw_only=True):
    """`POST /api/generate`: one prompt (and an optional system prompt after the agent's) to an agent."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    prompt: str = ""
    system: str = ""
    stream: bool = True
    options: OllamaOptions | None = None
    format: Literal["", "json"] | dict[str, Any] | None = None
    images: list[str] | None = None
    raw: bool = False
    suffix: str = ""


class OllamaGenerateResponse(msgspec.Struct, omit_defaults=True):
    """One NDJSON line of `/api/generate` (`response` holds the text), or the whole reply; counts on the last."""

    model: str
    created_at: str
    response: str
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class OllamaShowRequest(msgspec.Struct, kw_only=True):
    """`POST /api/show`: `model` names an agent (`name` is the older spelling clients still send)."""

    model: str = ""
    name: str = ""
    verbose: bool = False


class OllamaShow(msgspec.Struct):
    """`POST /api/show`: what clients read of an agent seen as a model; never its system prompt."""

    modelfile: str
    parameters: str
    template: str
    details: OllamaModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class OllamaRunning(msgspec.Struct):
    """One agent in `GET /api/ps`: piagent loads nothing itself, so every agent is ready."""

    name: str
    model: str
    size: int
    digest: str
    details: OllamaModelDetails
    expires_at: str
    size_vram: int


class OllamaProcesses(msgspec.Struct):
    """`GET /api/ps`: every agent, as a running model."""

    models: list[OllamaRunning]
