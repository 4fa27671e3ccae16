"""httpx's default transport (httpcore and h11), for https upstreams and PIAGENT_FAST_TRANSPORT=false, checked.

Two checks make it answer malformed responses as piagent's own transport does (the cases are listed in
`piagent.transport`'s docstring):

- A response with both Content-Length and Transfer-Encoding is refused (RemoteProtocolError, the connection
  closed): h11 lets Transfer-Encoding win and keeps the connection, llhttp refuses; RFC 9112 section 6.3 says
  such a message ought to be handled as an error, since it is how responses are split and requests smuggled.
- Bytes that follow a complete response never become the answer to the next request. h11 keeps what one read
  brought beyond the end of a response, and httpcore starts the connection's next cycle with it, so the next
  request on that connection would get those bytes (a stale or injected response) as its answer. When the
  response closes with such bytes left, the connection is ended instead (h11's own `ConnectionClosed`, after
  which httpcore closes it rather than pool it). Bytes arriving later on the idle connection are caught by
  httpcore itself, which drops a pooled connection whose socket is readable.

A response collected without ever being closed or read closes its connection too (httpcore would hold its pool
slot for good), as with piagent's own transport.

The second check reaches h11 through private attributes of httpx and httpcore (no public way exists, see
encode/httpcore#872); if they change, the check finds nothing and does nothing, and
tests/test_malformed_responses.py fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import h11
import httpx


def _h11_connection(stream: httpx.AsyncByteStream) -> Any:
    """The h11.Connection under an httpx response stream of httpx's default transport, or None."""
    pool_stream = getattr(stream, "_httpcore_stream", None)
    connection_stream = getattr(pool_stream, "_stream", None)
    connection = getattr(connection_stream, "_connection", None)
    state = getattr(connection, "_h11_state", None)
    return state if isinstance(state, h11.Connection) else None


class _CheckedStream(httpx.AsyncByteStream):
    """A response body that, when closed, ends its connection if bytes beyond the response were received."""

    __slots__ = ("_abandoned", "_closed", "_stream")

    def __init__(self, stream: httpx.AsyncByteStream, abandoned: Callable[[httpx.AsyncByteStream], None]) -> None:
        self._stream = stream
        self._abandoned = abandoned
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # no generator of its own: nothing added per chunk

    def __del__(self) -> None:
        if not self._closed:
            self._abandoned(self._stream)

    async def aclose(self) -> None:
        """Close the response; a connection with bytes left over after it is closed, not pooled."""
        self._closed = True
        state = _h11_connection(self._stream)
        if (
            state is not None
            and state.our_state is h11.DONE
            and state.their_state is h11.DONE
            and state.trailing_data[0]
        ):
            state.send(h11.ConnectionClosed())
        await self._stream.aclose()


class CheckedHTTPTransport(httpx.AsyncHTTPTransport):
    """httpx.AsyncHTTPTransport that refuses ambiguous framing and never hands leftover bytes to a later request."""

    def __init__(self, **kwargs: Any) -> None:
        """The arguments of httpx.AsyncHTTPTransport."""
        super().__init__(**kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: set[asyncio.Task[None]] = set()  # closes of abandoned responses, kept until done

    def _abandoned(self, stream: httpx.AsyncByteStream) -> None:
        """A response was collected unclosed (in any thread): close it on the loop it was made in."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed, and the connection with it
                self._loop.call_soon_threadsafe(self._close_abandoned, stream)

    def _close_abandoned(self, stream: httpx.AsyncByteStream) -> None:
        task = asyncio.ensure_future(stream.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` through httpcore; check the response's framing before handing it on."""
        if self._loop is None:
            with contextlib.suppress(RuntimeError):  # not asyncio (trio): an abandoned response stays so
                self._loop = asyncio.get_running_loop()
        response = await super().handle_async_request(request)
        headers = response.headers
        if "transfer-encoding" in headers and "content-length" in headers:
            await response.aclose()  # unread: httpcore closes the connection
            raise httpx.RemoteProtocolError("the response has both Content-Length and Transfer-Encoding")
        response.stream = _CheckedStream(cast(httpx.AsyncByteStream, response.stream), self._abandoned)
        return response
