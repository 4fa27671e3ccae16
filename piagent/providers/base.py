"""The provider seam: what the chat service asks of any model server, whatever its protocol."""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Protocol

import msgspec

from piagent.providers.pool import Upstream
from piagent.schemas import Timings, ToolCall, UpstreamHealth

__all__ = [
    "Completion",
    "Message",
    "OutputFormat",
    "Provider",
    "Timings",
    "ToolCall",
    "ToolSpec",
    "Tools",
    "new_call_id",
]


def new_call_id() -> str:
    """An id for a tool call whose upstream gave none (Ollama): OpenAI's `call_` form, unguessable."""
    return "call_" + secrets.token_hex(12)


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    """One chat message sent upstream; plain ones encode as `{"role", "content"}` as they are.

    An assistant message may carry the `tool_calls` it made; a `tool` message the result of one, named
    both ways (`tool_call_id` for OpenAI-compatible servers, `tool_name` for Ollama), so either
    provider can write it in its own protocol.
    """

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    tool_name: str = ""


class ToolSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """A function the model may call: its name, what it does, and a JSON schema for its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tools(msgspec.Struct, frozen=True):
    """The tools offered for one reply, and OpenAI's `tool_choice`: `auto`, `none`, `required` or
    `function` (then `function` names the one to call); `parallel` is `parallel_tool_calls` when set."""

    specs: tuple[ToolSpec, ...]
    choice: str = "auto"
    function: str = ""
    parallel: bool | None = None


class OutputFormat(msgspec.Struct, frozen=True):
    """Structured output: any JSON object (`schema` None), or one matching `schema` (`name`/`strict` are
    OpenAI's `json_schema` fields)."""

    schema: dict[str, Any] | None = None
    name: str = ""
    strict: bool | None = None


class Completion(msgspec.Struct, frozen=True):
    """The last item of every reply stream: why it stopped, what it cost, and the upstream's timings."""

    done_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    timings: Timings | None = None


class Provider(Protocol):
    """A model server protocol spoken to one or more upstreams. Errors are translated at this edge into
    `piagent.exceptions.UpstreamError`s, which name the upstream but never its URL."""

    name: str
    upstreams: tuple[Upstream, ...]

    # The `Tools.choice` values this protocol can honour; another is refused before anything is sent.
    tool_choices: frozenset[str]

    def stream_chat(
        self,
        model: str,
        messages: Sequence[Message],
        options: Mapping[str, Any],
        tools: Tools | None = None,
        output: OutputFormat | None = None,
    ) -> AsyncGenerator[str | ToolCall | Completion, None]:
        """Yield the reply's text pieces as generated and each tool call whole, then one `Completion`;
        closing it stops generation."""
        ...

    async def check(self, upstream: Upstream) -> UpstreamHealth:
        """Ask one of `upstreams` whether it is up, without generating anything; never raises."""
        ...
