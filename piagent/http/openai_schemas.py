"""The wire bodies of the OpenAI-compatible front door (`/v1/...`), as msgspec Structs.

Requests ignore fields they do not know, unlike piagent's own: the SDKs and the UIs built on them send
many optional ones (`user`, `logprobs`, `tools`, `parallel_tool_calls`, ...), and refusing them would
refuse those clients.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
StopText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ContentPart(msgspec.Struct, kw_only=True):
    """One part of a message's content; only `text` parts are served."""

    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct, kw_only=True):
    """One message the client sends (its history included: the API is stateless)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


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


class AssistantMessage(msgspec.Struct):
    """The reply, whole."""

    role: Literal["assistant"]
    content: str


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


class ChunkDelta(msgspec.Struct, omit_defaults=True):
    """What a chunk adds to the reply: the role once, then text."""

    role: Literal["assistant"] | None = None
    content: str | None = None


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


class OpenAIErrorDetail(msgspec.Struct):
    """OpenAI's error: a message, a type (`invalid_request_error`, ...), the offending parameter, a code."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(msgspec.Struct):
    """Every error on `/v1/...`, and the last event of a stream that failed midway."""

    error: OpenAIErrorDetail
