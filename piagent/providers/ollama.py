"""Ollama's native `/api/chat`, streamed as NDJSON over the shared httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import httpx
import msgspec

from piagent.exceptions import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from piagent.providers.base import Completion, Message, redact
from piagent.providers.lines import iter_lines
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


class _ErrorBody(msgspec.Struct):
    error: str = ""


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


def translate_transport_error(exc: httpx.TransportError, upstream: str) -> UpstreamError:
    """The piagent error for an httpx failure talking to `upstream` (never naming its URL)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamUnavailable(f"{upstream} did not accept a connection in time")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnavailable(f"{upstream} is unreachable (connection refused or no route); is it running?")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{upstream} did not answer in time")
    return UpstreamError(f"{upstream} broke the connection ({type(exc).__name__})")


def _error_text(body: bytes) -> str:
    try:
        text = msgspec.json.decode(body, type=_ErrorBody).error
    except (msgspec.DecodeError, UnicodeDecodeError):
        text = ""
    return redact(text or body[:200].decode("utf-8", "replace").strip()) or "no error text"


class OllamaProvider:
    """Talks to one Ollama server; owns nothing but its encoder and decoders (the client is shared).

    Two read timeouts, at no cost per token: until the response head arrives, `first_token_timeout`
    (Ollama sends its head with the first token, after loading the model and reading the prompt);
    after it, the client's own read timeout, the longest silence allowed between two pieces.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        keep_alive: str = "",
        max_line_bytes: int = 1 << 20,
        name: str = "ollama",
        first_token_timeout: float | None = None,
    ) -> None:
        self.name = name
        self._client = client
        timeout = client.timeout
        self._idle_timeout = timeout.read
        self._first_token_timeout = timeout.read if first_token_timeout is None else first_token_timeout
        self._head_timeout = httpx.Timeout(
            connect=timeout.connect, read=self._first_token_timeout, write=timeout.write, pool=timeout.pool
        )
        # Parsed once: httpx would otherwise parse the URL string and build the headers on every request.
        self._chat_url = httpx.URL(f"{base_url}/api/chat")
        self._version_url = httpx.URL(f"{base_url}/api/version")
        self._tags_url = httpx.URL(f"{base_url}/api/tags")
        self._headers = httpx.Headers({"Content-Type": "application/json", "Accept": "application/x-ndjson"})
        self._keep_alive = _keep_alive(keep_alive)
        self._max_line_bytes = max_line_bytes
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(_Chunk)

    def _body(self, model: str, messages: Sequence[Message], options: Mapping[str, Any]) -> bytes:
        native = {_OPTION_NAMES.get(key, key): value for key, value in options.items()} if options else None
        return self._encoder.encode(_ChatBody(model, messages, True, native, self._keep_alive))

    async def stream_chat(
        self, model: str, messages: Sequence[Message], options: Mapping[str, Any]
    ) -> AsyncIterator[str | Completion]:
        """Yield the reply's text pieces as Ollama generates them, then one `Completion`."""
        body = self._body(model, messages, options)
        decode = self._decoder.decode
        completion: Completion | None = None
        answering = False
        try:
            async with self._client.stream(
                "POST", self._chat_url, content=body, headers=self._headers, timeout=self._head_timeout
            ) as response:
                # The head is in: from now on the longest silence allowed is the idle timeout. httpcore
                # looks this value up once when the body starts, so this one write covers every read.
                response.request.extensions["timeout"]["read"] = self._idle_timeout
                answering = True
                if response.status_code != 200:
                    await response.aread()
                    raise self._status_error(response.status_code, response.content)
                async for line in iter_lines(response.aiter_bytes(), self._max_line_bytes, self.name):
                    if completion is not None:
                        continue  # nothing follows "done"; reading to the end keeps the connection poolable
                    try:
                        chunk = decode(line)
                    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                        raise UpstreamError(f"{self.name} sent a line that is not valid JSON: {exc}") from exc
                    if chunk.error is not None:
                        raise UpstreamError(f"{self.name}: {redact(chunk.error)}")
                    if chunk.message is not None and chunk.message.content:
                        yield chunk.message.content
                    if chunk.done:
                        completion = Completion(chunk.done_reason, chunk.prompt_eval_count, chunk.eval_count)
        except httpx.TransportError as exc:
            if completion is None:
                raise self._transport_error(exc, answering) from exc
            # The reply was whole; a failure while reading past its end only costs the connection.
        if completion is None:
            raise UpstreamError(f"{self.name} ended the stream before the reply was done")
        yield completion

    def _transport_error(self, exc: httpx.TransportError, answering: bool) -> UpstreamError:
        if isinstance(exc, httpx.ReadTimeout):
            if answering:
                return UpstreamTimeout(f"{self.name} went silent for {self._idle_timeout:g} s after starting its reply")
            return UpstreamTimeout(f"{self.name} did not start its reply within {self._first_token_timeout:g} s")
        return translate_transport_error(exc, self.name)

    def _status_error(self, status: int, body: bytes) -> UpstreamError:
        message = f"{self.name}: {_error_text(body)} (HTTP {status})"
        if status == 503:
            return UpstreamUnavailable(message)
        return UpstreamError(message)

    async def _get(self, url: httpx.URL, seconds: float) -> bytes:
        """A small GET answered by the server itself; failures translated like a chat's."""
        try:
            response = await self._client.get(url, timeout=seconds)
        except httpx.TransportError as exc:
            raise translate_transport_error(exc, self.name) from exc
        if response.status_code != 200:
            raise self._status_error(response.status_code, response.content)
        return response.content

    async def version(self, seconds: float = 5.0) -> str:
        """The server's version from `/api/version` ("" when it gives none); raises an `UpstreamError`."""
        body = await self._get(self._version_url, seconds)
        try:
            return msgspec.json.decode(body, type=_Version).version
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise UpstreamError(f"{self.name} answered /api/version with something else") from exc

    async def list_models(self, seconds: float = 10.0) -> list[ModelInfo]:
        """The models pulled on the server, from `/api/tags`; raises an `UpstreamError`."""
        body = await self._get(self._tags_url, seconds)
        try:
            tags = msgspec.json.decode(body, type=_Tags)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise UpstreamError(f"{self.name} answered /api/tags with something else") from exc
        return [ModelInfo(model.name, model.size) for model in tags.models]

    async def check(self) -> UpstreamHealth:
        """Ask `/api/version`; never raises."""
        try:
            version = await self.version()
        except UpstreamError as exc:
            reached = not isinstance(exc, UpstreamUnavailable | UpstreamTimeout)
            status: Literal["unavailable", "error"] = "error" if reached else "unavailable"
            return UpstreamHealth(self.name, status, error=exc.message)
        return UpstreamHealth(self.name, "ok", version=version or None)
