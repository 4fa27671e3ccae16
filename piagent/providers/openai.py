"""OpenAI-compatible `/v1/chat/completions` (llama.cpp, LM Studio, vLLM, LocalAI, ...), streamed as SSE."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import httpx
import msgspec

from piagent.exceptions import UpstreamError
from piagent.providers.base import Completion, Message, OutputFormat, ToolCall, Tools
from piagent.providers.common import ProviderCore, ReplyLimits, trim
from piagent.providers.errors import redact
from piagent.providers.lines import sse_data
from piagent.providers.pool import Upstream, UpstreamPool
from piagent.providers.tooling import ToolCallLimits, ToolCallPieces
from piagent.providers.tooling_openai import (
    NO_FUNCTION,
    FunctionPiece,
    ToolMessage,
    add_tools,
    response_format,
    wire_message,
)
from piagent.schemas import UpstreamHealth

# The agent options (Ollama's vocabulary plus piagent's `max_tokens`) that mean the same to an
# OpenAI-compatible server, under its names. The rest (num_ctx, num_thread, ...) are load-time
# settings of Ollama that such a server fixes at start-up, and a strict server rejects unknown fields.
_OPTION_NAMES = {
    "max_tokens": "max_tokens",
    "num_predict": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    # Not in OpenAI's API, but llama.cpp, llama-cpp-python, vLLM and LocalAI read them.
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
}


class _StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = True


_STREAM_OPTIONS = _StreamOptions()


class _ToolCallPiece(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: FunctionPiece | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCallPiece] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _ErrorInfo(msgspec.Struct):
    message: str = ""


class _Chunk(msgspec.Struct):
    """One `data:` event; lenient, since servers add fields (`id`, `model`, `system_fingerprint`, ...)."""

    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: _ErrorInfo | str | None = None


class _ModelEntry(msgspec.Struct):
    id: str = ""


class _Models(msgspec.Struct):
    data: list[_ModelEntry] = []


def openai_base(url: str) -> str:
    """The server's root: users often paste the SDK-style base URL ending in `/v1`."""
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def _check_models(body: bytes) -> str | None:
    msgspec.json.decode(body, type=_Models)
    return None  # the OpenAI API has no version endpoint


class OpenAIProvider:
    """Talks to one OpenAI-compatible server or a pool of them; owns nothing but its codecs.

    The same two read timeouts as the Ollama provider: `first_token_timeout` until the response head,
    then the client's own read timeout between two events. Streamed tool calls are put together from
    their pieces and yielded whole when the choice finishes.
    """

    tool_choices = frozenset({"auto", "none", "required", "function"})

    def __init__(
        self,
        client: httpx.AsyncClient,
        pool: UpstreamPool,
        limits: ReplyLimits | None = None,
        *,
        api_key: str = "",
        tool_limits: ToolCallLimits | None = None,
    ) -> None:
        self.name = pool.kind
        self._tool_limits = ToolCallLimits() if tool_limits is None else tool_limits
        self.upstreams = pool.upstreams
        self._core = ProviderCore(client, pool, "text/event-stream", api_key, limits or ReplyLimits())
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
        wire: Sequence[Message | ToolMessage] = messages
        if any(message.tool_calls or message.role == "tool" for message in messages):
            wire = [wire_message(message) for message in messages]
        body: dict[str, Any] = {"model": model, "messages": wire}
        for key, value in options.items():
            name = _OPTION_NAMES.get(key)
            if name is not None:
                body[name] = value
        if tools is not None:
            add_tools(body, tools)
        if output is not None:
            body["response_format"] = response_format(output)
        # stream_options asks for the usage chunk; servers that do not know it ignore it.
        body["stream"] = True
        body["stream_options"] = _STREAM_OPTIONS
        return self._encoder.encode(body)

    async def stream_chat(
        self,
        model: str,
        messages: Sequence[Message],
        options: Mapping[str, Any],
        tools: Tools | None = None,
        output: OutputFormat | None = None,
    ) -> AsyncGenerator[str | ToolCall | Completion, None]:
        """Yield the reply's text pieces as the server streams them and each tool call, then one `Completion`.

        The reply ends at `[DONE]` or at the choice that says why it stopped (its usage chunk is read if it
        follows at once), or as a `length` stop once its text passes `max_reply_bytes`: the upstream request
        is then closed, and the pieces relayed stand in for the token count.
        """
        body = self._body(model, messages, options, tools, output)
        decode = self._decoder.decode
        finish: str | None = None
        usage: _Usage | None = None
        room = self._core.max_reply_bytes
        relayed = 0

        def read_usage(line: bytes) -> None:
            nonlocal usage
            data = sse_data(line, name)
            if data is not None and not data.startswith(b"[DONE]"):
                usage = decode(data).usage or usage

        async with self._core.reply("/v1/chat/completions", body) as (name, lines):
            pieces = ToolCallPieces(self._tool_limits, name)
            async for line in lines:
                data = sse_data(line, name)
                if data is None:  # a comment (keep-alive) or another field
                    continue
                if data.startswith(b"[DONE]"):
                    await self._core.finish(lines)
                    break
                try:
                    chunk = decode(data)
                except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                    raise UpstreamError(f"{name} sent an event that is not valid JSON: {exc}") from exc
                if chunk.error is not None:
                    error = chunk.error
                    message = error if isinstance(error, str) else error.message
                    raise UpstreamError(f"{name}: {redact(message) or 'error without a message'}")
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.choices:
                    choice = chunk.choices[0]
                    delta = choice.delta
                    if delta is not None:
                        if text := delta.content:
                            room -= len(text) if text.isascii() else len(text.encode())
                            if room < 0:
                                if kept := trim(text, -room):
                                    relayed += 1
                                    yield kept
                                finish, usage = "length", _Usage(0, relayed)
                                break
                            relayed += 1
                            yield text
                        if delta.tool_calls:
                            for piece in delta.tool_calls:
                                function = piece.function or NO_FUNCTION
                                pieces.add(piece.index, piece.id, function.name, function.arguments)
                    if choice.finish_reason is not None:
                        finish = choice.finish_reason
                        for call in pieces.finish():
                            yield call
                        await self._core.finish(lines, read_usage)
                        break
            else:
                raise UpstreamError(f"{name} ended the stream before the reply was done")
            if room >= 0:
                for call in pieces.finish():  # a server that sent [DONE] without a finish_reason
                    yield call
        if usage is None:
            yield Completion(finish, 0, 0)
        else:
            yield Completion(finish, usage.prompt_tokens, usage.completion_tokens)

    async def list_models(self, seconds: float = 10.0, upstream: Upstream | None = None) -> list[str]:
        """The model ids the server lists at `/v1/models`; raises an `UpstreamError`.

        Asks `upstream`, by default the first of this provider's.
        """
        models = await self._core.get_json("/v1/models", _Models, seconds, upstream)
        return [model.id for model in models.data if model.id]

    async def check(self, upstream: Upstream) -> UpstreamHealth:
        """Ask one of this provider's upstreams for `/v1/models`; never raises."""
        return await self._core.check(upstream, "/v1/models", _check_models)
