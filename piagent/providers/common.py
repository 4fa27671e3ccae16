"""The core every HTTP provider shares: the client, the pool and the headers; a reply opened with its status
checked; the small JSON calls (`check`, version, model lists) with their failures translated.

Nothing an upstream sends is read unbounded: an error body up to `max_error_bytes`, a small JSON answer up to
`max_line_bytes`, a reply line by line and its text up to `max_reply_bytes` (the providers cut it there), and
past a reply's last line only what arrives within `END_WAIT`. Bodies must not be compressed: piagent asks for
`identity`, and a compressed body that comes all the same is refused, since inflating it could turn a few
kilobytes into gigabytes before any limit applied.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Literal, NamedTuple, TypeVar, cast

import anyio
import httpx
import msgspec

from piagent.exceptions import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from piagent.providers.errors import ReplyTimeouts, status_error, translate_transport_error
from piagent.providers.lines import iter_lines
from piagent.providers.pool import Upstream, UpstreamPool
from piagent.schemas import UpstreamHealth

T = TypeVar("T")

# How long the end of a reply's body is waited for once its last line is in. A model server ends the body at
# once (the chunked terminator follows the last line within microseconds), and a connection whose body ended
# is reused; one that keeps its body open past this is closed instead, so its reply is not held up.
END_WAIT = 0.1


def request_headers(accept: str, api_key: str = "", defaults: httpx.Headers | None = None) -> httpx.Headers:
    """The headers of every upstream request: the client's `defaults` (its User-Agent), JSON in, `accept` out,
    no compression, and the API key if any.

    Built once per provider: httpx would otherwise merge and normalize them on every request.
    """
    headers = httpx.Headers(defaults)
    headers.update({"Content-Type": "application/json", "Accept": accept, "Accept-Encoding": "identity"})
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


async def read_upto(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """The start of `response`'s body, at most `limit` bytes, and whether there was more (left unread:
    closing the response then closes its connection)."""
    parts: list[bytes] = []
    size = 0
    # httpx's aiter_bytes is an async generator, closed here rather than whenever it is collected.
    async with aclosing(cast(AsyncGenerator[bytes, None], response.aiter_bytes())) as chunks:
        async for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                return b"".join(parts)[:limit], True
    return b"".join(parts), False


def body_chunks(response: httpx.Response) -> AsyncIterable[bytes]:
    """The body as the transport reads it: a streamed reply's bytes without httpx's two generators around them.

    `aiter_bytes` decodes and re-chunks, and `aiter_raw` counts and tags errors with their request: two async
    generator steps more for every upstream read, which at one token per read is a good part of its CPU. Neither
    is needed here: a compressed body is refused before the body is read, and chunk sizes are the reads'.
    """
    stream = response.stream
    return stream if isinstance(stream, httpx.AsyncByteStream) else response.aiter_bytes()


class ReplyLimits(NamedTuple):
    """What one upstream reply may cost piagent: its longest line (and small JSON answer), its error body, its
    text, and the wait for its first token (None: the client's read timeout). Built once from the settings."""

    max_line_bytes: int = 1 << 20
    max_error_bytes: int = 64 * 1024
    max_reply_bytes: int = 256 * 1024
    first_token_timeout: float | None = None


def trim(text: str, over: int) -> str:
    """`text` without its last `over` bytes of UTF-8 (a character cut in two is dropped whole)."""
    data = text.encode()
    return data[: len(data) - over].decode("utf-8", "ignore")


def refuse_compressed(response: httpx.Response, upstream: str) -> None:
    """Raise an `UpstreamError` for a body sent compressed, which piagent never asks for."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", ""):
        raise UpstreamError(
            f"{upstream} sent a compressed body (Content-Encoding: {encoding[:40]}) although piagent asks for "
            "identity; turn compression off in front of it"
        )


class ProviderCore:
    """One provider's way to its upstreams over the shared client: what is the same whatever the protocol.

    Owns nothing it must close (the client is shared, a pool holds no connection); a provider keeps one.
    """

    __slots__ = (
        "_check_headers",
        "_headers",
        "client",
        "max_error_bytes",
        "max_line_bytes",
        "max_reply_bytes",
        "pool",
        "timeouts",
    )

    def __init__(
        self, client: httpx.AsyncClient, pool: UpstreamPool, accept: str, api_key: str, limits: ReplyLimits
    ) -> None:
        self.client = client
        self.pool = pool
        self.timeouts = ReplyTimeouts(client, limits.first_token_timeout)
        self.max_line_bytes = limits.max_line_bytes
        self.max_error_bytes = limits.max_error_bytes
        self.max_reply_bytes = limits.max_reply_bytes
        self._headers = request_headers(accept, api_key, client.headers)
        self._check_headers = request_headers("application/json", api_key)

    @asynccontextmanager
    async def reply(self, path: str, body: bytes) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        """POST `body` to `path` on the pool's choice; yields the upstream's name and the reply's lines. An error
        status raises its `UpstreamError`, and so does a transport failure while the caller reads the lines
        (translated here, once for every protocol)."""
        async with self.pool.stream(self.client, path, body, self._headers, self.timeouts) as (upstream, response):
            name = upstream.name
            try:
                refuse_compressed(response, name)
                if response.status_code != 200:
                    text, _ = await read_upto(response, self.max_error_bytes)
                    raise status_error(name, response.status_code, text)
                async with aclosing(iter_lines(body_chunks(response), self.max_line_bytes, name)) as lines:
                    yield name, lines
            except httpx.TransportError as exc:
                raise self.timeouts.body_error(exc, name) from exc

    @staticmethod
    async def finish(lines: AsyncIterator[bytes], each: Callable[[bytes], object] | None = None) -> None:
        """After a reply's last line: read on for at most `END_WAIT` seconds, handing each line to `each` (an
        OpenAI usage chunk comes after the finish), so that a body which ends there leaves its connection
        fit for the next request. Whatever goes wrong now costs only the connection: the reply is whole."""
        with anyio.move_on_after(END_WAIT):
            try:
                async for line in lines:
                    if each is not None:
                        each(line)
            except (UpstreamError, httpx.TransportError, msgspec.DecodeError, UnicodeDecodeError):
                pass

    async def get(self, upstream: Upstream, path: str, seconds: float) -> bytes:
        """A small GET on `upstream` that its server answers itself (no generation); failures translated like
        a chat's, and a refused connection starts its cool-off."""
        name = upstream.name
        try:
            async with self.client.stream(
                "GET", upstream.url_for(path), headers=self._check_headers, timeout=seconds
            ) as response:
                refuse_compressed(response, name)
                if response.status_code != 200:
                    text, _ = await read_upto(response, self.max_error_bytes)
                    raise status_error(name, response.status_code, text)
                body, more = await read_upto(response, self.max_line_bytes)
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                self.pool.mark_down(upstream)
            raise translate_transport_error(exc, name) from exc
        upstream.down_until = 0.0
        if more:
            raise UpstreamError(f"{name} answered {path} with more than {self.max_line_bytes} bytes")
        return body

    async def get_json(self, path: str, schema: type[T], seconds: float, upstream: Upstream | None = None) -> T:
        """GET `path` on `upstream` (by default the pool's first) and decode it as `schema`; raises an
        `UpstreamError`, also for a body that is not what the protocol says."""
        upstream = self.pool.upstreams[0] if upstream is None else upstream
        body = await self.get(upstream, path, seconds)
        try:
            return msgspec.json.decode(body, type=schema)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise UpstreamError(f"{upstream.name} answered {path} with something else") from exc

    async def check(
        self, upstream: Upstream, path: str, version: Callable[[bytes], str | None], seconds: float = 5.0
    ) -> UpstreamHealth:
        """GET `path` on `upstream` and report it, with `version` read from the body. Never raises."""
        name = upstream.name
        try:
            found = version(await self.get(upstream, path, seconds))
        except UpstreamError as exc:
            reached = not isinstance(exc, UpstreamUnavailable | UpstreamTimeout)
            status: Literal["unavailable", "error"] = "error" if reached else "unavailable"
            return UpstreamHealth(name, status, error=exc.message, in_flight=upstream.in_flight)
        except (msgspec.DecodeError, UnicodeDecodeError):
            message = f"{name} answered {path} with something else"
            return UpstreamHealth(name, "error", error=message, in_flight=upstream.in_flight)
        return UpstreamHealth(name, "ok", version=found, in_flight=upstream.in_flight)
