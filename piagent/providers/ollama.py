"""Ollama's native `/api/chat`, streamed as NDJSON over the shared httpx client, to one server or several."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import httpx
import msgspec

from piagent.exceptions import UpstreamError
from piagent.providers.base import Completion, Message, OutputFormat, Timings, ToolCall, Tools
from piagent.providers.common import ProviderCore, ReplyLimits, trim
from piagent.providers.errors import redact
from piagent.providers.pool import Upstream, UpstreamPool
from piagent.providers.tooling import FunctionTool, ToolCallLimits, check_count, checked_call, function_tools
from piagent.schemas import UpstreamHealth

# piagent's option names that Ollama spells differently; every other option passes through as-is.
_OPTION_NAMES = {"max_tokens": "num_predict"}


class _Function(msgspec.Struct, frozen=True):
    name: str
    arguments: msgspec.Raw  # a JSON object; kept as its text, which is what piagent passes on


class _ToolCall(msgspec.Struct, frozen=True, omit_defaults=True):
    function: _Function
    id: str = ""  # newer Ollama versions send one; older ones do not


class _ToolMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """A message that carries tool calls or a tool's result, in Ollama's shape (arguments as an object)."""

    role: str
    content: str
    tool_calls: list[_ToolCall] | None = None
    tool_name: str = ""


class _ChatBody(msgspec.Struct, omit_defaults=True):
    model: str
    messages: Sequence[Any]  # Message or _ToolMessage: only ever encoded, so the union needs no tag
    stream: bool  # no default, so it is always sent
    options: Mapping[str, Any] | None = None
    keep_alive: str | float | None = None
    tools: list[FunctionTool] | None = None
    format: str | dict[str, Any] | None = None


class _ChunkMessage(msgspec.Struct):
    content: str = ""
    tool_calls: list[_ToolCall] | None = None


class _Chunk(msgspec.Struct):
    """One NDJSON line; lenient, since Ollama adds fields between versions."""

    message: _ChunkMessage | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int = 0
    eval_count: int = 0
    load_duration: int = 0
    prompt_eval_duration: int = 0
    eval_duration: int = 0
    error: str | None = None


class _Version(msgspec.Struct):
    version: str = ""


class _Model(msgspec.Struct):
    name: str
    size: int = 0


class _Tags(msgspec.Struct):
    models: list[_Model]


class ModelInfo(msgspec.Struct, frozen=True):
    """A model the server has pulled, as `/api/tags` lists it."""

    name: str
    size: int


def model_key(name: str) -> str:
    """The name Ollama files a model under: a name without a tag means `:latest`."""
    return name if ":" in name.rpartition("/")[2] else f"{name}:latest"


def _wire_message(message: Message) -> Message | _ToolMessage:
    """The message in Ollama's shape: a plain one as it is; tool calls with their arguments as objects."""
    if not message.tool_calls and not message.tool_name:
        return message
    calls = [
        _ToolCall(_Function(call.name, msgspec.Raw(call.arguments.encode())), call.id) for call in message.tool_calls
    ]
    return _ToolMessage(message.role, message.content, calls or None, message.tool_name)


def _format(output: OutputFormat | None) -> str | dict[str, Any] | None:
    if output is None:
        return None
    return "json" if output.schema is None else output.schema


def _timings(chunk: _Chunk) -> Timings | None:
    if not (chunk.load_duration or chunk.prompt_eval_duration or chunk.eval_duration):
        return None
    return Timings(chunk.load_duration, chunk.prompt_eval_duration, chunk.eval_duration)


def _keep_alive(text: str) -> str | float | None:
    """Ollama reads a bare number as seconds but a string only as a Go duration ("10m"), so convert."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text


class OllamaProvider:
    """Talks to one Ollama server or a pool of them; owns nothing but its codecs (the client is shared).

    Two read timeouts, at no cost per token: `first_token_timeout` until the response head arrives
    (Ollama sends it with the first token), then the client's own read timeout between two pieces.
    Ollama has no `tool_choice`: `none` sends no tools, `auto` is what it does anyway, and the others
    cannot be honoured.
    """

    tool_choices = frozenset({"auto", "none"})

    def __init__(
        self,
        client: httpx.AsyncClient,
        pool: UpstreamPool,
        limits: ReplyLimits | None = None,
        *,
        keep_alive: str = "",
        api_key: str = "",
        tool_limits: ToolCallLimits | None = None,
    ) -> None:
        self.name = pool.kind
        self._tool_limits = ToolCallLimits() if tool_limits is None else tool_limits
        self.upstreams = pool.upstreams
        self._core = ProviderCore(client, pool, "application/x-ndjson", api_key, limits or ReplyLimits())
        self._keep_alive = _keep_alive(keep_alive)
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(_Chunk)

    def _body(
        self,
        model: str,
        messages: Sequence[Message],
        options: Mapping[str, Any],
        tools: Tools | None,
        output: OutputFormat | None,
    ) -> bytes:
        native = {_OPTION_NAMES.get(key, key): value for key, value in options.items()} if options else None
        wire: Sequence[Message | _ToolMessage] = messages
        if any(message.tool_calls or message.tool_name for message in messages):
            wire = [_wire_message(message) for message in messages]
        offered = function_tools(tools) if tools is not None and tools.choice != "none" and tools.specs else None
        return self._encoder.encode(_ChatBody(model, wire, True, native, self._keep_alive, offered, _format(output)))

    async def stream_chat(
        self,
        model: str,
        messages: Sequence[Message],
        options: Mapping[str, Any],
        tools: Tools | None = None,
        output: OutputFormat | None = None,
    ) -> AsyncGenerator[str | ToolCall | Completion, None]:
        """Yield the reply's text pieces as Ollama generates them and each tool call, then one `Completion`.

        The reply ends at its `done` line, or as a `length` stop once its text passes `max_reply_bytes`: the
        upstream request is then closed, and the pieces relayed stand in for the token count.
        """
        body = self._body(model, messages, options, tools, output)
        decode = self._decoder.decode
        completion: Completion | None = None
        calls = 0
        room = self._core.max_reply_bytes
        relayed = 0
        async with self._core.reply("/api/chat", body) as (name, lines):
            async for line in lines:
                try:
                    chunk = decode(line)
                except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                    raise UpstreamError(f"{name} sent a line that is not valid JSON: {exc}") from exc
                if chunk.error is not None:
                    raise UpstreamError(f"{name}: {redact(chunk.error)}")
                message = chunk.message
                if message is not None:
                    if text := message.content:
                        room -= len(text) if text.isascii() else len(text.encode())
                        if room < 0:
                            if kept := trim(text, -room):
                                relayed += 1
                                yield kept
                            completion = Completion("length", chunk.prompt_eval_count, relayed)
                            break
                        relayed += 1
                        yield text
                    if message.tool_calls:
                        calls += len(message.tool_calls)
                        check_count(calls, self._tool_limits, name)
                        for call in message.tool_calls:
                            yield self._tool_call(call, name)
                if chunk.done:
                    completion = Completion(
                        chunk.done_reason, chunk.prompt_eval_count, chunk.eval_count, _timings(chunk)
                    )
                    await self._core.finish(lines)
                    break
            if completion is None:
                raise UpstreamError(f"{name} ended the stream before the reply was done")
        yield completion

    def _tool_call(self, call: _ToolCall, upstream: str) -> ToolCall:
        arguments = bytes(call.function.arguments)
        if arguments.startswith(b'"'):  # a server that sends the OpenAI form (a JSON string) by mistake
            try:
                arguments = msgspec.json.decode(arguments, type=str).encode()
            except msgspec.DecodeError as exc:
                raise UpstreamError(f"{upstream} sent tool call arguments that are not valid JSON") from exc
        return checked_call(call.id, call.function.name, arguments, self._tool_limits, upstream)

    async def check(self, upstream: Upstream) -> UpstreamHealth:
        """Ask one of this provider's upstreams for `/api/version`; never raises."""
        return await self._core.check(upstream, "/api/version", _version)

    async def version(self, seconds: float = 5.0, upstream: Upstream | None = None) -> str:
        """The server's version from `/api/version` ("" when it gives none); raises an `UpstreamError`.

        Asks `upstream`, by default the first of this provider's.
        """
        return (await self._core.get_json("/api/version", _Version, seconds, upstream)).version

    async def list_models(self, seconds: float = 10.0, upstream: Upstream | None = None) -> list[ModelInfo]:
        """The models pulled on the server, from `/api/tags`; raises an `UpstreamError`.

        Asks `upstream`, by default the first of this provider's.
        """
        tags = await self._core.get_json("/api/tags", _Tags, seconds, upstream)
        return [ModelInfo(model.name, model.size) for model in tags.models]


def _version(body: bytes) -> str | None:
    return msgspec.json.decode(body, type=_Version).version or None
