"""Several upstream servers behind one provider: the least busy first, one that refuses connections skipped."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import cast

import httpx

from piagent.exceptions import UpstreamError, UpstreamUnavailable
from piagent.providers.errors import ReplyTimeouts, translate_transport_error


class Upstream:
    """One model server: its base URL (never shown), its public name, and what the pool knows of it."""

    __slots__ = ("_urls", "down_until", "in_flight", "name", "url")

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.in_flight = 0
        # Monotonic time until which it is tried only after the others; 0.0 when it is not cooling off.
        self.down_until = 0.0
        self._urls: dict[str, httpx.URL] = {}

    def url_for(self, path: str) -> httpx.URL:
        """The URL of `path` on this server, parsed once (httpx would parse the string on every request)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.url + path)
        return url


async def _post(
    client: httpx.AsyncClient,
    url: httpx.URL,
    content: bytes,
    headers: httpx.Headers,
    timeouts: dict[str, float | None],
) -> httpx.Response:
    """POST through the client's own transport, doing of `client.send` only what piagent's requests need.

    httpx's client layer cost about a fifth of a short request's CPU here: request building and header
    merging (`headers` already hold the client's defaults, see `request_headers`), auth and redirect
    wrappers and event hooks (piagent uses none), and the cookie jar, which builds a urllib Request for
    every response (a model server sets no cookie piagent would send back). What stays: httpx's response
    and exception types, the timeouts (the request's extension, where transports read them), and the
    transport the client would choose. piagent's own transport takes the request without an httpx.Request
    at all (its head encoded once per upstream and path); any other (httpx's, for https) gets one.
    """
    transport = client._transport_for_url(url)
    post = getattr(transport, "post", None)  # piagent's transport (not imported here: httptools may be missing)
    if post is not None:
        return cast(httpx.Response, await post(url, headers, content, timeouts))
    request = httpx.Request("POST", url, content=content, headers=headers, extensions={"timeout": timeouts})
    try:
        response = await transport.handle_async_request(request)
    except httpx.RequestError as exc:
        exc.request = request  # as httpx's client does, so the error knows its request
        raise
    response.request = request
    return response


class UpstreamPool:
    """Picks an upstream per request and opens the stream; retries the next only when a connection is refused.

    A refused (or timed-out) connection means the request never reached that server, so trying the next
    one cannot run a generation twice; any later failure is the caller's to report. A server that refused
    is tried only after the others for `cooloff` seconds of the injected `clock`. `on_error(code, name)` is
    told every failure of an upstream (one that refused and was skipped included), from the connection to
    the reply's last line: whatever `UpstreamError` leaves the stream (the metrics count them).
    """

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        kind: str,
        *,
        cooloff: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:
        if not upstreams:
            raise ValueError("an upstream pool needs at least one upstream")
        self.upstreams = tuple(upstreams)
        self.kind = kind
        self._cooloff = cooloff
        self._clock = clock
        self._on_error = on_error
        self._turn = 0  # rotates the tie-break, so idle upstreams take turns

    @classmethod
    def from_urls(
        cls, kind: str, urls: Sequence[str], *, cooloff: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> UpstreamPool:
        """A pool of fresh upstreams for these base URLs, named `kind` when there is one and `kind#1`, `kind#2`,
        ... when several (the factory names the shared ones itself; `piagent check` and tests use this)."""
        bases = [url.rstrip("/") for url in urls]
        if len(bases) == 1:
            upstreams = [Upstream(bases[0], kind)]
        else:
            upstreams = [Upstream(url, f"{kind}#{number}") for number, url in enumerate(bases, start=1)]
        return cls(upstreams, kind, cooloff=cooloff, clock=clock)

    def candidates(self) -> list[Upstream]:
        """Every upstream in the order to try: available ones least busy first, cooling-off ones last."""
        upstreams = self.upstreams
        if len(upstreams) == 1:
            return list(upstreams)
        now = self._clock()
        count = len(upstreams)
        turn = self._turn
        self._turn = (turn + 1) % count
        order = sorted(
            range(count),
            key=lambda i: (
                upstreams[i].down_until > now,
                upstreams[i].down_until if upstreams[i].down_until > now else 0.0,
                upstreams[i].in_flight,
                (i - turn) % count,
            ),
        )
        return [upstreams[i] for i in order]

    def mark_down(self, upstream: Upstream) -> None:
        """`upstream` refused a connection: try it last until the cool-off ends."""
        upstream.down_until = self._clock() + self._cooloff

    def is_down(self, upstream: Upstream) -> bool:
        """Whether `upstream` is cooling off after a refused connection."""
        return upstream.down_until > self._clock()

    @asynccontextmanager
    async def stream(
        self,
        client: httpx.AsyncClient,
        path: str,
        content: bytes,
        headers: httpx.Headers,
        timeouts: ReplyTimeouts | None = None,
    ) -> AsyncIterator[tuple[Upstream, httpx.Response]]:
        """POST to the first upstream that accepts the connection; the response is closed on exit.

        What `client.stream()` does, plus the choice of upstream: the in-flight count covers the whole
        exchange, so a long generation keeps its server marked busy until its last token.
        """
        refused: list[Upstream] = []
        last_error: httpx.TransportError | None = None
        waits = timeouts.head if timeouts is not None else client.timeout
        for upstream in self.candidates():
            upstream.in_flight += 1
            # The timeouts as a request's extension: a dict of its own, which the transport reads from.
            extension = waits.as_dict()
            try:
                response = await _post(client, upstream.url_for(path), content, headers, extension)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                upstream.in_flight -= 1
                self.mark_down(upstream)
                refused.append(upstream)
                last_error = exc
                if self._on_error is not None:
                    self._on_error(UpstreamUnavailable.code, upstream.name)
                continue
            except httpx.TransportError as exc:
                upstream.in_flight -= 1
                name = upstream.name
                error = timeouts.head_error(exc, name) if timeouts is not None else translate_transport_error(exc, name)
                if self._on_error is not None:
                    self._on_error(error.code, name)
                raise error from exc
            except BaseException:
                upstream.in_flight -= 1
                raise
            upstream.down_until = 0.0
            if timeouts is not None:
                # The head is in: from now on the longest silence allowed is the idle timeout. The transport
                # looks this value up once when the body starts, so this one write covers every read.
                extension["read"] = timeouts.idle
            try:
                yield upstream, response
            except UpstreamError as exc:  # the caller's error status, broken line or early end: this upstream's
                if self._on_error is not None:
                    self._on_error(exc.code, upstream.name)
                raise
            finally:
                upstream.in_flight -= 1
                await response.aclose()
            return
        assert last_error is not None
        if len(refused) == 1:
            raise translate_transport_error(last_error, refused[0].name) from last_error
        names = ", ".join(upstream.name for upstream in refused)
        raise UpstreamUnavailable(
            f"{self.kind}: none of its {len(refused)} upstreams accepted a connection ({names}); are they running?"
        ) from last_error
