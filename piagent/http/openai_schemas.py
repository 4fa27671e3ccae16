"""The wire bodies of the OpenAI-compatible front door (`/v1/...`), as msgspec Structs.

Requests ignore fields they do not know, unlike piagent's own: the SDKs and the UIs built on them send
many optional ones (`user`, `logprobs`, `metadata`, ...), and refusing them would refuse those clients.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from piagent.schemas import whole_string

MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
StopText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ContentPart(msgspec.Struct, kw_only=True):
    """One part of a message's content; only `text` parts are served."""

    type: str
    text: str | None = None


# OpenAI's rule for function names; Ollama's clients send the same names.
FunctionName = Annotated[str, whole_string(r"[A-Za-z0-9_.:-]{1,64}")]
Schema = dict[str, Any]


class FunctionCall(msgspec.Struct, kw_only=True):
    """A function the model called: `arguments` is a JSON object as text."""

    name: FunctionName
    arguments: str = "{}"


class MessageToolCall(msgspec.Struct, kw_only=True):
    """One tool call of an assistant message (in a reply, or sent back in the history)."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(msgspec.Struct, kw_only=True):
    """One message the client sends (its history included: the API is stateless); an assistant message may
    carry the `tool_calls` it made, and a `tool` message answers one by its `tool_call_id`."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class FunctionDefinition(msgspec.Struct, kw_only=True):
    """A function the model may call, with a JSON schema for its arguments."""

    name: FunctionName
    description: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    parameters: Schema | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, kw_only=True):
    """One entry of `tools`: `{"type": "function", "function": {...}}`."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(msgspec.Struct, kw_only=True):
    """The function a named `tool_choice` forces."""

    name: FunctionName


class NamedToolChoice(msgspec.Struct, kw_only=True):
    """`tool_choice` naming the one function to call."""

    type: Literal["function"]
    function: NamedFunction


class TextFormat(msgspec.Struct, kw_only=True, tag_field="type", tag="text"):
    """`response_format` `{"type": "text"}`: plain text, the default."""


class JSONObjectFormat(msgspec.Struct, kw_only=True, tag_field="type", tag="json_object"):
    """`response_format` `{"type": "json_object"}`: any JSON object."""


class JSONSchemaSpec(msgspec.Struct, kw_only=True):
    """The schema of a `json_schema` response format."""

    name: Annotated[str, whole_string(r"[A-Za-z0-9_-]{1,64}")]
    description: str = ""
    schema: Schema | None = None
    strict: bool | None = None


class JSONSchemaFormat(msgspec.Struct, kw_only=True, tag_field="type", tag="json_schema"):
    """`response_format` `{"type": "json_schema", "json_schema": {...}}`: JSON matching the schema."""

    json_schema: JSONSchemaSpec


class StreamOptions(msgspec.Struct, kw_only=True):
    """`stream_options`: `include_usage` adds a last chunk with the token counts."""

    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    """`POST /v1/chat/completions`: `model` names a piagent agent."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    seed: int | None = None
    stop: StopText | Annotated[list[StopText], msgspec.Meta(max_length=4)] | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=1)] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: TextFormat | JSONObjectFormat | JSONSchemaFormat | None = None


class AssistantMessage(msgspec.Struct, omit_defaults=True):
    """The reply, whole: its text, or (content null) the tool calls the model asks for."""

    role: Literal["assistant"]
    content: str | None
    tool_calls: list[MessageToolCall] | None = None


class CompletionChoice(msgspec.Struct):
    """The one choice of a non-streamed completion."""

    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class CompletionUsage(msgspec.Struct):
    """Token counts as the model server reported them (0 when it did not)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(msgspec.Struct):
    """The non-streamed answer to `POST /v1/chat/completions`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


class FunctionPiece(msgspec.Struct, omit_defaults=True):
    """A piece of a streamed function call: the name in the first, then the arguments (JSON text) in pieces."""

    arguments: str
    name: str | None = None


class ToolCallPiece(msgspec.Struct, omit_defaults=True):
    """A piece of a streamed tool call, `index` saying which: the first has its id and type."""

    index: int
    function: FunctionPiece
    id: str | None = None
    type: Literal["function"] | None = None


class ChunkDelta(msgspec.Struct, omit_defaults=True):
    """What a chunk adds to the reply: the role once, then text or tool call pieces."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallPiece] | None = None


class ChunkChoice(msgspec.Struct):
    """The one choice of a streamed chunk; `finish_reason` is set on the last."""

    index: int
    delta: ChunkDelta
    finish_reason: str | None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct, omit_defaults=True):
    """One `data:` event of a streamed completion; with `include_usage` a last one has no choices and the usage."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None


class Model(msgspec.Struct):
    """One agent, seen as a model."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(msgspec.Struct):
    """`GET /v1/models`: every agent."""

    object: Literal["list"]
    data: list[Model]


class OpenAIErrorDetail(msgspec.Struct, omit_defaults=True):
    """OpenAI's error: a message, a type (`invalid_request_error`, ...), the offending parameter, a code, and
    piagent's request id (OpenAI's clients read the fields they know and keep the object whole)."""

    message: str
    type: str
    param: str | None
    code: str | None
    request_id: str | None = None


class OpenAIErrorBody(msgspec.Struct):
    """Every error on `/v1/...`, and the last event of a stream that failed midway."""

    error: OpenAIErrorDetail
