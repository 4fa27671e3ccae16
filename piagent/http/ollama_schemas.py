"""The wire bodies of the Ollama-compatible front door (`/api/...`), as msgspec Structs.

Requests ignore fields they do not know (`tools`, `format`, `think`, `keep_alive`, load-time options):
Ollama's clients send them, and the agent, not the client, decides how the model runs.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

StopText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class OllamaMessage(msgspec.Struct, kw_only=True):
    """One message the client sends (its history included)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None


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


class OllamaReplyMessage(msgspec.Struct):
    """The reply (a piece of it when streaming)."""

    role: Literal["assistant"]
    content: str


class OllamaChatResponse(msgspec.Struct, omit_defaults=True):
    """One NDJSON line of a streamed reply, or the whole reply with `"stream": false`; counts on the last."""

    model: str
    created_at: str
    message: OllamaReplyMessage
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None


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


class OllamaError(msgspec.Struct):
    """Ollama's error shape, on `/api/...` and as the last line of a stream that failed midway."""

    error: str
