"""The core every HTTP provider shares: the client, the pool and the headers; a reply opened with its status
checked; the small JSON calls (`check`, version, model lists) with their failures translated."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import httpx
import msgspec

from piagent.exceptions import UpstreamError
from piagent.providers.errors import ReplyTimeouts, status_error
from piagent.providers.lines import iter_lines
from piagent.providers.pool import Upstream, UpstreamPool
from piagent.schemas import UpstreamHealth

T = TypeVar("T")


def request_headers(accept: str, api_key: str = "") -> httpx.Headers:
    """The headers of every upstream request: JSON in, `accept` out, and the API key when there is one.

    Built once per provider: httpx would otherwise normalize a dict into Headers on every request.
    """
    headers = {"Content-Type": "application/json", "Accept": accept}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return httpx.Headers(headers)


class ProviderCore:
    """One provider's way to its upstreams over the shared client: what is the same whatever the protocol.

    Owns nothing it must close (the client is shared, a pool holds no connection); a provider keeps one.
    """

    __slots__ = ("_check_headers", "_headers", "client", "max_line_bytes", "pool", "timeouts")

    def __init__(
        self,
        client: httpx.AsyncClient,
        pool: UpstreamPool,
        accept: str,
        api_key: str = "",
        max_line_bytes: int = 1 << 20,
        first_token_timeout: float | None = None,
    ) -> None:
        self.client = client
        self.pool = pool
        self.timeouts = ReplyTimeouts(client, first_token_timeout)
        self.max_line_bytes = max_line_bytes
        self._headers = request_headers(accept, api_key)
        self._check_headers = request_headers("application/json", api_key)

    @asynccontextmanager
    async def reply(self, path: str, body: bytes) -> AsyncIterator[tuple[str, httpx.Response]]:
        """POST `body` to `path` on the pool's choice; yields the upstream's name and a 200 response whose body
        is still to be read. An error status raises its `UpstreamError`, and so does a transport failure
        while the caller reads the body (translated here, once for every protocol)."""
        async with self.pool.stream(self.client, path, body, self._headers, self.timeouts) as (upstream, response):
            name = upstream.name
            try:
                if response.status_code != 200:
                    await response.aread()
                    raise status_error(name, response.status_code, response.content)
                yield name, response
            except httpx.TransportError as exc:
                raise self.timeouts.body_error(exc, name) from exc

    def lines(self, response: httpx.Response, name: str) -> AsyncIterator[bytes]:
        """The non-blank lines of a reply's body, each bounded by `max_line_bytes`."""
        return iter_lines(response.aiter_bytes(), self.max_line_bytes, name)

    async def get_json(self, path: str, schema: type[T], seconds: float, upstream: Upstream | None = None) -> T:
        """GET `path` on `upstream` (by default the pool's first) and decode it as `schema`; raises an
        `UpstreamError`, also for a body that is not what the protocol says."""
        upstream = self.pool.upstreams[0] if upstream is None else upstream
        body = await self.pool.get(self.client, upstream, path, self._check_headers, seconds)
        try:
            return msgspec.json.decode(body, type=schema)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise UpstreamError(f"{upstream.name} answered {path} with something else") from exc

    async def check(self, upstream: Upstream, path: str, version: Callable[[bytes], str | None]) -> UpstreamHealth:
        """GET `path` on `upstream` and report its health, with `version` read from the body; never raises."""
        return await self.pool.check(self.client, upstream, path, self._check_headers, version)
