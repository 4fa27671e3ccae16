"""Ollama's native `/api/chat`, streamed as NDJSON over the shared httpx client, to one server or several."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import httpx
import msgspec

from piagent.exceptions import UpstreamError
from piagent.providers.base import Completion, Message
from piagent.providers.common import ProviderCore
from piagent.providers.errors import redact
from piagent.providers.pool import Upstream, UpstreamPool
from piagent.schemas import UpstreamHealth

# piagent's option names that Ollama spells differently; every other option passes through as-is.
_OPTION_NAMES = {"max_tokens": "num_predict"}


class _ChatBody(msgspec.Struct, omit_defaults=True):
    model: str
    messages: Sequence[Message]
    stream: bool  # no default, so it is always sent
    options: Mapping[str, Any] | None = None
    keep_alive: str | float | None = None


class _ChunkMessage(msgspec.Struct):
    content: str = ""


class _Chunk(msgspec.Struct):
    """One NDJSON line; lenient, since Ollama adds fields between versions."""

    message: _ChunkMessage | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int = 0
    eval_count: int = 0
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
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        pool: UpstreamPool,
        keep_alive: str = "",
        max_line_bytes: int = 1 << 20,
        api_key: str = "",
        first_token_timeout: float | None = None,
        max_error_bytes: int = 64 * 1024,
    ) -> None:
        self.name = pool.kind
        self.upstreams = pool.upstreams
        self._core = ProviderCore(
            client, pool, "application/x-ndjson", api_key, max_line_bytes, first_token_timeout, max_error_bytes
        )
        self._keep_alive = _keep_alive(keep_alive)
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(_Chunk)

    def _body(self, model: str, messages: Sequence[Message], options: Mapping[str, Any]) -> bytes:
        native = {_OPTION_NAMES.get(key, key): value for key, value in options.items()} if options else None
        return self._encoder.encode(_ChatBody(model, messages, True, native, self._keep_alive))

    async def stream_chat(
        self, model: str, messages: Sequence[Message], options: Mapping[str, Any]
    ) -> AsyncGenerator[str | Completion, None]:
        """Yield the reply's text pieces as Ollama generates them, then one `Completion`."""
        body = self._body(model, messages, options)
        decode = self._decoder.decode
        completion: Completion | None = None
        async with self._core.reply("/api/chat", body) as (name, lines):
            try:
                async for line in lines:
                    if completion is not None:
                        continue  # nothing follows "done"; reading to the end keeps the connection poolable
                    try:
                        chunk = decode(line)
                    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                        raise UpstreamError(f"{name} sent a line that is not valid JSON: {exc}") from exc
                    if chunk.error is not None:
                        raise UpstreamError(f"{name}: {redact(chunk.error)}")
                    if chunk.message is not None and chunk.message.content:
                        yield chunk.message.content
                    if chunk.done:
                        completion = Completion(chunk.done_reason, chunk.prompt_eval_count, chunk.eval_count)
            except httpx.TransportError:
                if completion is None:
                    raise
                # The reply was whole; a failure while reading past its end only costs the connection.
            if completion is None:
                raise UpstreamError(f"{name} ended the stream before the reply was done")
        yield completion

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
