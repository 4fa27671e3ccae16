"""A lean httpx transport for plain-http upstreams: one asyncio Protocol per connection, parsed by httptools.

Why it exists: piagent relays Ollama's tokens, which arrive as chunked NDJSON with one HTTP chunk per token.
Profiled under load (py-spy), about 55% of the server's CPU on that streaming path went to httpx's default
transport stack, per chunk: h11's pure-Python HTTP/1.1 parsing (`_readers`, `_connection`, `_receivebuffer`,
`_util`, `_state`, `_events`: ~29%), httpcore (~10%, including a context manager per read), anyio streams
(~6%) and contextlib (~6.5%). On the non-streaming path httpcore's per-request pool bookkeeping
(`_assign_requests_to_connections`, `AsyncEvent`, `AsyncShieldCancellation`) dominated. Here the event loop
hands bytes straight to llhttp (C, through httptools, which uvicorn already brings), body bytes wait in a
list until the reader asks, and a timer is armed only while a reader actually waits.

piagent keeps its one shared `httpx.AsyncClient`: only the transport changes (httpx's documented extension
point), so every caller keeps httpx's API and exceptions. It implements what piagent relies on from httpx's
own transport: streamed bodies (chunked, Content-Length or close-delimited; 1xx answers skipped), a pool
bounded by `httpx.Limits` with LIFO keep-alive reuse, the four timeouts, httpx's exception classes, one
retry when a reused keep-alive connection turns out to have been closed by the server, and a closed (or
abandoned) response that closes its TCP connection at once, which is how Ollama learns to stop generating.
Not supported: https, proxies, HTTP/2, upgrades; the app falls back to httpx's default transport for those
(`piagent.httpx_transport`, which adds the checks marked * below so both transports answer alike).

An upstream is not trusted to speak HTTP well. What each transport does with a malformed response, as chosen
(tests/test_malformed_responses.py runs every case on both):

- A response head over `max_head_bytes` (PIAGENT_MAX_UPSTREAM_HEAD_BYTES, 64 KiB; 1xx heads before it count)
  or with more than `max_headers` fields (PIAGENT_MAX_UPSTREAM_HEADERS, 100): a RemoteProtocolError, the
  connection closed, after at most one socket read past the bound. httpx's transport bounds a head at 100 KiB
  (h11's limit as httpcore sets it), counts no fields, and drops any number of 1xx answers one by one.
- Content-Length together with Transfer-Encoding (RFC 9112 section 6.3: how responses are split): refused,
  the connection closed (llhttp here; * for h11, which would let Transfer-Encoding win and pool the connection).
- Two Content-Lengths, or a Transfer-Encoding other than chunked: refused by both.
- A bare LF ending the status line or a header line: accepted by both (RFC 9112 section 2.2 lets a recipient).
  In chunk framing it stays an error here; h11 waits for a CRLF that never comes (a read timeout).
- A folded header (obs-fold): refused here (llhttp unfolds only with all value checks off); h11 unfolds it.
- Bytes after a complete response, in the same read or later on the idle connection: never an answer to the
  next request. The connection is closed and the next request goes out on another (* for h11, which keeps the
  leftover of a read and would hand it to the next request on that connection). Bytes that arrive only after
  the next request was written cannot be told from its answer, by any client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
from collections.abc import AsyncIterator, Mapping
from typing import Final, cast

import httptools
import httpx

# Unread body bytes per connection above which the socket is no longer read, so a slow consumer cannot
# make piagent buffer a fast upstream's whole reply; reading resumes when the consumer has taken them.
BUFFER_LIMIT: Final = 64 * 1024
# A response head's bounds when none are given (piagent passes PIAGENT_MAX_UPSTREAM_HEAD_BYTES and
# PIAGENT_MAX_UPSTREAM_HEADERS): h11's kind of limit, which httpx's default transport applies at 100 KiB.
MAX_HEAD_BYTES: Final = 64 * 1024
MAX_HEADERS: Final = 100

_Origin = tuple[str, int]


class _State(enum.IntEnum):
    """How far the exchange on a connection has got, as httpcore's `HTTPConnectionState` and h11's states say it.

    The order matters: every state from BODY on has the response head, every state from DONE on the whole
    response. A failure does not change the state (it sets `_Connection.error` and closes the socket), so the
    state still says how far the exchange got: WAITING means the server sent not one byte of an answer.
    """

    IDLE = 0  # no request in flight (new, or kept alive in the pool): a byte from the server now is a fault
    WAITING = 1  # the request is sent; no byte of the answer yet
    HEAD = 2  # the answer's status line and headers are arriving
    INFORMATIONAL = 3  # a 1xx answer's head is in (100 Continue, 103 Early Hints): the real answer follows
    BODY = 4  # the head is in; the body is arriving
    DONE = 5  # the response is complete and the connection can carry another request
    ENDED = 6  # the response is complete but the connection cannot be reused (closing, closed or told to close)


# Module constants for the per-token path: a global is found faster than a member through its class.
_IDLE: Final = _State.IDLE
_WAITING: Final = _State.WAITING
_HEAD: Final = _State.HEAD
_INFORMATIONAL: Final = _State.INFORMATIONAL
_BODY: Final = _State.BODY
_DONE: Final = _State.DONE
_MAX_HEADS = 256  # post()'s kept request heads: a provider has a handful (one per upstream and path)
_ENDED: Final = _State.ENDED


class _ExtraResponse(Exception):
    """Raised from the parser callback when bytes follow a complete response (never leaves this module)."""


class _HeadTooLarge(Exception):
    """Raised from the parser callback when a response head passes its bounds (never leaves this module)."""


def _with_cause(error: httpx.TransportError, cause: BaseException | None) -> httpx.TransportError:
    error.__cause__ = cause
    return error


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: the event loop feeds its bytes to llhttp; one request at a time."""

    __slots__ = (
        "_chunks",
        "_close_after",
        "_closing",
        "_deadline",
        "_drain_waiter",
        "_field_bytes",
        "_head_bytes",
        "_head_request",
        "_loop",
        "_max_head_bytes",
        "_max_headers",
        "_parser",
        "_pool",
        "_reading_paused",
        "_timer",
        "_waiter",
        "_writing_paused",
        "buffered",
        "error",
        "headers",
        "http_version",
        "idle_since",
        "origin",
        "reason",
        "state",
        "status",
        "transport",
    )

    def __init__(self, pool: _Pool, origin: _Origin, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._max_head_bytes = pool.max_head_bytes
        self._max_headers = pool.max_headers
        self._loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[bool] | None = None
        self._drain_waiter: asyncio.Future[bool] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        # Flow control, both ways: asyncio's own protocol flags, independent of the exchange's state.
        self._reading_paused = False
        self._writing_paused = False
        self._closing: asyncio.Future[None] = loop.create_future()
        self.error: httpx.TransportError | None = None  # set once the connection failed; it is then closed
        self.idle_since = 0.0
        self._reset(_IDLE, head_request=False, close_after=False)

    def _reset(self, state: _State, head_request: bool, close_after: bool) -> None:
        """Forget the previous response (also drops unread bytes of a complete one)."""
        self.state = state
        self._head_request = head_request  # llhttp cannot be told the request was HEAD
        self._close_after = close_after  # the request asked for Connection: close
        self._head_bytes = 0  # bytes fed to the parser while the answer's head was incomplete (1xx included)
        self._field_bytes = 0  # bytes of the header fields parsed (1xx included)
        self._chunks: list[bytes] = []
        self.buffered = 0
        self.status = 0
        self.reason = b""
        self.http_version = b"HTTP/1.1"
        self.headers: list[tuple[bytes, bytes]] = []

    # ----------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # nobody asked: an idle connection that speaks out of turn cannot be trusted
            self._fail(httpx.RemoteProtocolError("the server sent data on an idle connection"))
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if self.state >= _DONE and isinstance(cause, _ExtraResponse):
                self.state = _ENDED  # the reply is whole; only the connection is lost
                self.abort()
            elif isinstance(cause, _HeadTooLarge):
                self._fail(_with_cause(httpx.RemoteProtocolError(str(cause)), exc))
            else:
                self._fail(_with_cause(httpx.RemoteProtocolError(f"invalid HTTP response: {exc}"), exc))
        except httptools.HttpParserUpgrade as exc:
            self._fail(_with_cause(httpx.RemoteProtocolError("the server switched protocols"), exc))
        state = self.state
        if state is not _BODY and state < _BODY and self.error is None:  # `is` first: the per-token case
            # All of `data` was head. httptools gathers a header's pieces itself before calling on_header, so
            # a single endless header is caught here, at most one socket read past the bound.
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head_bytes:
                self._fail(httpx.RemoteProtocolError(f"the response head is over {self._max_head_bytes} bytes"))
        self._wake()

    def eof_received(self) -> bool:
        self._end_of_stream(None)
        return False  # let the transport close its side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_of_stream(exc)
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(False)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._closing.done():
            self._closing.set_result(None)
        self._pool.connection_lost(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(False)

    # ----------------------------------------------------------------- httptools callbacks

    def on_message_begin(self) -> None:
        if self.state >= _DONE:
            raise _ExtraResponse
        self.state = _HEAD

    def on_status(self, status: bytes) -> None:
        self.reason += status  # llhttp may hand the reason phrase over in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        headers.append((name, value))
        # Counted as the fields arrive, so that a head ending in the same read as it passes the bound is
        # caught too (the check in data_received sees only heads still incomplete).
        self._field_bytes += len(name) + len(value) + 4
        if len(headers) > self._max_headers:
            raise _HeadTooLarge(f"the response head has more than {self._max_headers} header fields")
        if self._field_bytes > self._max_head_bytes:
            raise _HeadTooLarge(f"the response head is over {self._max_head_bytes} bytes")

    def on_headers_complete(self) -> None:
        parser = cast(httptools.HttpResponseParser, self._parser)
        status = parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints...: not the answer; the real one follows
            self.state = _INFORMATIONAL
            self.headers = []
            self.reason = b""
            return
        self.status = status
        self.http_version = b"HTTP/" + parser.get_http_version().encode()
        if self._head_request:  # the message ends here, whatever its Content-Length says
            self.state = _DONE if not self._close_after and parser.should_keep_alive() else _ENDED
        else:
            self.state = _BODY

    def on_body(self, body: bytes) -> None:
        if self.state is not _BODY:
            return
        self._chunks.append(body)
        self.buffered += len(body)
        if self.buffered > BUFFER_LIMIT and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        state = self.state
        if state is _INFORMATIONAL:
            self.state = _HEAD
        elif state is _BODY:
            parser = cast(httptools.HttpResponseParser, self._parser)
            self.state = _DONE if not self._close_after and parser.should_keep_alive() else _ENDED

    # ----------------------------------------------------------------- state changes

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    def fail(self, error: httpx.TransportError) -> None:
        """End the response in progress with `error` and close the connection."""
        self._fail(error)

    def _fail(self, error: httpx.TransportError) -> None:
        if self.error is None:
            self.error = error
        if self.state is _DONE:
            self.state = _ENDED
        self.abort()
        self._wake()

    def _end_of_stream(self, exc: Exception | None) -> None:
        """The server closed (exc None) or the connection broke: end or fail the response in progress."""
        state = self.state
        if state is _DONE:
            self.state = _ENDED
        elif state is not _ENDED and self.error is None:
            if exc is not None:
                self.error = _with_cause(httpx.ReadError(str(exc) or type(exc).__name__), exc)
            elif state is _BODY and self._until_close():
                self.state = _ENDED
            elif state is _BODY:
                self.error = httpx.RemoteProtocolError("the server closed the connection before the body was complete")
            else:
                self.error = httpx.RemoteProtocolError("the server closed the connection without sending a response")
        self._wake()

    def _until_close(self) -> bool:
        """Whether the body is delimited by the connection closing (neither a length nor chunked)."""
        if self.status in (204, 304):
            return False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    def abort(self) -> None:
        """Close the TCP connection now, without waiting for anything buffered."""
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close the TCP connection politely (its write buffer is empty whenever this is called)."""
        if self.transport is not None:
            self.transport.close()

    def reusable(self) -> bool:
        """The last response completed, keep-alive holds and the server has not closed."""
        return self.state is _DONE

    def usable(self, now: float, expiry: float | None) -> bool:
        """An idle connection that can take a request."""
        if self.error is not None or self.transport is None or self.transport.is_closing():
            return False
        return expiry is None or now - self.idle_since <= expiry

    def make_idle(self) -> None:
        self._parser = None
        self._reset(_IDLE, head_request=False, close_after=False)
        self.idle_since = self._loop.time()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the connection lives in."""
        return self._loop

    @property
    def closing(self) -> asyncio.Future[None]:
        """Done once the event loop has closed the socket."""
        return self._closing

    # ----------------------------------------------------------------- one request

    async def send(self, data: bytes, head_request: bool, close: bool, write_timeout: float | None) -> None:
        """Write the whole request; wait only if the transport's write buffer is over its limit."""
        self._reset(_WAITING, head_request, close)
        parser = self._parser = httptools.HttpResponseParser(self)
        # A bare LF ending the status line or a header line is accepted, as RFC 9112 section 2.2 allows and
        # h11 (httpx's default transport) does; framing stays strict (see the module docstring).
        parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        transport = self.transport
        if self.error is not None:
            raise self.error
        if transport is None or transport.is_closing():
            raise httpx.WriteError("the connection was closed before the request could be sent")
        transport.write(data)
        while self._writing_paused:
            if self._closing.done():
                raise self.error or httpx.WriteError("the connection was lost while sending the request")
            waiter = self._drain_waiter = self._loop.create_future()
            timer = None if write_timeout is None else self._loop.call_later(write_timeout, _expire, waiter)
            try:
                timed_out = await waiter
            finally:
                if timer is not None:
                    timer.cancel()
            if timed_out:
                raise httpx.WriteTimeout("timed out sending the request")

    async def receive_headers(self, read_timeout: float | None) -> None:
        """Wait until the response's status line and headers are in."""
        while self.state < _BODY:
            if self.error is not None:
                raise self.error
            await self.receive(read_timeout)

    async def receive(self, read_timeout: float | None) -> None:
        """Wait for the server's next bytes (or its closing); raise ReadTimeout past `read_timeout`."""
        waiter = self._waiter = self._loop.create_future()
        if read_timeout is not None:
            self._deadline = deadline = self._loop.time() + read_timeout
            timer = self._timer
            # One lazy timer per connection rather than one per wait: a streamed reply waits once per
            # token, and creating and cancelling a timer each time cost more than the wait itself.
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._timer = self._loop.call_at(deadline, self._check_deadline)
        if await waiter:
            raise httpx.ReadTimeout("timed out waiting for the server")

    def _check_deadline(self) -> None:
        """The read timer fired: time out the wait in progress if its deadline has passed, else re-arm."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nobody is waiting; the next wait arms a new timer
        if self._loop.time() >= self._deadline:
            waiter.set_result(True)
        else:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    def take(self) -> bytes:
        """Every body byte received and not yet read, as one piece."""
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self.buffered = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)


class _Pool:
    """Connections by origin: LIFO idle lists, a bound on the total, and a FIFO queue of requests waiting."""

    def __init__(self, limits: httpx.Limits, max_head_bytes: int, max_headers: int) -> None:
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self._max = limits.max_connections
        self._max_idle = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._waiters: collections.deque[tuple[_Origin, asyncio.Future[_Connection | None]]] = collections.deque()
        self.connections: set[_Connection] = set()
        self._closing: set[_Connection] = set()  # out of the pool, but the loop has not closed the socket yet
        self.slots = 0  # connections open or being opened, and slots handed to a waiter
        self.idle_count = 0
        self.closed = False

    async def acquire(
        self, origin: _Origin, pool_timeout: float | None, connect_timeout: float | None
    ) -> tuple[_Connection, bool]:
        """A connection for `origin` and whether it was used before; opens, reuses or waits for one."""
        if self.closed:
            raise RuntimeError("the transport is closed")
        idle = self._idle.get(origin)
        if idle:
            now = asyncio.get_running_loop().time()
            while idle:
                conn = idle.pop()
                self.idle_count -= 1
                if conn.usable(now, self._expiry):
                    return conn, True
                self._discard(conn)
        if self._max is None or self.slots < self._max:
            self.slots += 1
            return await self.open(origin, connect_timeout), False
        if self.idle_count:  # full of idle connections to other origins: make room
            victim = next(conns for conns in self._idle.values() if conns).pop(0)
            self.idle_count -= 1
            self.replace(victim)  # its slot goes to the new connection
            return await self.open(origin, connect_timeout), False
        got = await self._wait_for_turn(origin, pool_timeout)
        if got is None:
            return await self.open(origin, connect_timeout), False
        if got.usable(asyncio.get_running_loop().time(), self._expiry):
            return got, True
        self.replace(got)  # its slot goes to a fresh connection
        return await self.open(origin, connect_timeout), False

    async def _wait_for_turn(self, origin: _Origin, pool_timeout: float | None) -> _Connection | None:
        """Queue until a connection to `origin` or a free slot (None) is handed over."""
        turn: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append((origin, turn))
        try:
            async with asyncio.timeout(pool_timeout):
                return await turn
        except BaseException as exc:
            if turn.done() and not turn.cancelled():  # handed over just as we gave up: pass it on
                got = turn.result()
                if got is None:
                    self._free_slot()
                else:
                    self.release(got)
            else:
                turn.cancel()
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("timed out waiting for a connection from the pool") from exc
            raise

    async def open(self, origin: _Origin, connect_timeout: float | None) -> _Connection:
        """Connect to `origin` in a slot already counted; the slot is freed if that fails."""
        loop = asyncio.get_running_loop()
        host, port = origin
        try:
            if self.closed:
                raise RuntimeError("the transport is closed")
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(self, origin, loop), host, port)
        except BaseException as exc:
            self._free_slot()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from exc
            if isinstance(exc, OSError):
                raise httpx.ConnectError(str(exc) or f"cannot connect to {host}:{port}") from exc
            raise
        self.connections.add(conn)
        return conn

    def replace(self, conn: _Connection) -> None:
        """Drop `conn` but keep its slot, for a new connection opened at once with `open`."""
        conn.abort()
        if not conn.closing.done():
            self._closing.add(conn)
        self.connections.discard(conn)

    def release(self, conn: _Connection) -> None:
        """A request is done with `conn`: hand it on, keep it idle, or close it and free its slot."""
        if not conn.reusable() or self.closed:
            self._discard(conn)
            return
        conn.make_idle()
        waiters = self._waiters
        others = False
        for index, (origin, turn) in enumerate(waiters):
            if turn.done():
                continue
            if origin == conn.origin:
                del waiters[index]
                turn.set_result(conn)
                return
            others = True
        if others or (self._max_idle is not None and self.idle_count >= self._max_idle):
            self._discard(conn, polite=True)
            return
        self._idle.setdefault(conn.origin, []).append(conn)
        self.idle_count += 1

    def connection_lost(self, conn: _Connection) -> None:
        """The socket is gone; an idle connection leaves the pool now (one in use, when its request ends)."""
        self._closing.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle is not None and conn in idle:
            idle.remove(conn)
            self.idle_count -= 1
            self._discard(conn)

    def _discard(self, conn: _Connection, polite: bool = False) -> None:
        if polite:
            conn.close()
        else:
            conn.abort()
        if not conn.closing.done():
            self._closing.add(conn)
        if conn in self.connections:
            self.connections.discard(conn)
            self._free_slot()

    def _free_slot(self) -> None:
        """A slot is free: the first request still waiting gets it, else the count drops."""
        waiters = self._waiters
        while waiters:
            _, turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.slots -= 1

    async def aclose(self) -> None:
        """Close every connection, idle or in use, and wait (briefly) until their sockets are closed."""
        self.closed = True
        idle = [conn for conns in self._idle.values() for conn in conns]
        self._idle.clear()
        self.idle_count = 0
        for conn in idle:
            self._discard(conn)
        conns = list(self.connections | self._closing)
        for conn in conns:
            conn.fail(httpx.ReadError("the transport was closed"))
        while self._waiters:  # they find the transport closed when they try to connect
            _, turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
        if conns:
            await asyncio.wait([conn.closing for conn in conns], timeout=1.0)


class ResponseStream(httpx.AsyncByteStream):
    """A response body: yields what has arrived (waiting only when nothing has); closing frees the connection.

    So does abandoning it: an iteration left unfinished (its generator closed or collected) or, at the latest,
    the stream itself collected without ever being closed. A complete response goes back to the pool, any
    other closes its connection, so a caller that forgets to close a response cannot hold a pool slot.
    """

    def __init__(self, conn: _Connection, pool: _Pool, timeouts: Mapping[str, float | None]) -> None:
        self._conn = conn
        self._pool = pool
        self._timeouts = timeouts
        self._closed = False

    @property
    def buffered(self) -> int:
        """Body bytes received from the server and not yet read (bounded by about BUFFER_LIMIT)."""
        return self._conn.buffered

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        # Looked up when the body starts, as httpcore does: a caller may set the request's read timeout
        # anew once the head is in (piagent's provider switches from the first-token to the idle timeout).
        timeout = self._timeouts.get("read")
        try:
            while True:
                if conn.buffered:
                    yield conn.take()
                elif conn.state >= _DONE:
                    return
                elif conn.error is not None:
                    raise conn.error
                else:
                    await conn.receive(timeout)
        except BaseException:  # GeneratorExit (abandoned), cancelled or failed: the connection is done with
            self._release()
            raise

    async def aclose(self) -> None:
        """Back to the pool if the response was complete and keep-alive holds; else the connection closes now."""
        self._release()

    def _release(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.release(self._conn)

    def __del__(self) -> None:
        if not self._closed:  # collected unclosed; the collector may run in any thread, the pool lives in one
            self._closed = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: so is the socket
                self._conn.loop.call_soon_threadsafe(self._pool.release, self._conn)


def _encode(request: httpx.Request, body: bytes) -> tuple[bytes, bool]:
    """The request's bytes (line, headers, body) and whether it asked to close the connection."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    close = False
    chunked = False
    for name, value in request.headers.raw:
        parts += (name, b": ", value, b"\r\n")
        if len(name) == 10 and name.lower() == b"connection":
            close = b"close" in value.lower()
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    parts.append(b"\r\n")
    head = b"".join(parts)
    # h11 refused CR and LF inside a header or the target; so must we, or a value could smuggle a request.
    if head.count(b"\n") != len(parts) // 4 + 1 or head.count(b"\r") != head.count(b"\n"):
        raise httpx.LocalProtocolError("a header name or value, or the target, contains CR or LF")
    if chunked:  # httpx chose chunked for a body of unknown length; it has been read whole by now
        body = (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    return head + body, close


class HTTPToolsTransport(httpx.AsyncBaseTransport):
    """An httpx transport for `http://` upstreams on asyncio: httptools' C parser, asyncio Protocols, a small pool."""

    def __init__(
        self, limits: httpx.Limits | None = None, max_head_bytes: int = MAX_HEAD_BYTES, max_headers: int = MAX_HEADERS
    ) -> None:
        """`limits` as for httpx.AsyncClient (default: httpx's, 100 connections, 20 kept alive for 5 s); a response
        head over `max_head_bytes` or with more than `max_headers` fields is a RemoteProtocolError."""
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._pool = _Pool(limits, max_head_bytes, max_headers)
        # post()'s encoded request heads: (id(url), id(headers)) -> (url, headers, head, close, origin).
        self._heads: dict[tuple[int, int], tuple[httpx.URL, httpx.Headers, bytes, bool, _Origin]] = {}

    @property
    def connections(self) -> int:
        """Connections open (idle or in use)."""
        return len(self._pool.connections)

    @property
    def idle_connections(self) -> int:
        """Keep-alive connections waiting in the pool."""
        return self._pool.idle_count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and return as soon as the response headers are in; the body streams."""
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"this transport speaks plain http only, not {url.scheme!r}")
        timeouts = request.extensions.get("timeout") or {}
        try:
            body = request.content
        except httpx.RequestNotRead:
            stream = cast(httpx.AsyncByteStream, request.stream)
            body = b"".join([part async for part in stream])
        data, close = _encode(request, body)
        return await self._exchange((url.host, url.port or 80), data, request.method == "HEAD", close, timeouts)

    async def post(
        self, url: httpx.URL, headers: httpx.Headers, body: bytes, timeouts: Mapping[str, float | None]
    ) -> httpx.Response:
        """POST `body` with `headers` to `url`, as `handle_async_request` would, without building an httpx.Request.

        The request's head (line, Host, the headers) is encoded once per (url, headers) pair and kept, with the
        two objects, so their ids stay theirs: both must not be changed after a first use (piagent's providers
        build them once). Only the Content-Length and the body are new for each request. `timeouts` is read as
        a request's timeout extension is, its "read" entry when the body starts.
        """
        key = (id(url), id(headers))
        kept = self._heads.get(key)
        if kept is None:
            if url.scheme != "http":
                raise httpx.UnsupportedProtocol(f"this transport speaks plain http only, not {url.scheme!r}")
            if len(self._heads) >= _MAX_HEADS:
                self._heads.clear()
            # Encoded by the same code as any request, with the headers httpx.Request would add (Host first).
            probe = httpx.Request("POST", url, headers=headers, content=b"")
            line, close = _encode(probe, b"")
            head = line.replace(b"\r\nContent-Length: 0\r\n", b"\r\n", 1)[:-2]
            kept = self._heads[key] = (url, headers, head, close, (url.host, url.port or 80))
        _, _, head, close, origin = kept
        data = b"%bContent-Length: %d\r\n\r\n%b" % (head, len(body), body)
        return await self._exchange(origin, data, False, close, timeouts)

    async def _exchange(
        self, origin: _Origin, data: bytes, head_request: bool, close: bool, timeouts: Mapping[str, float | None]
    ) -> httpx.Response:
        """Send one encoded request on a pooled connection; the response once its headers are in."""
        write_timeout = timeouts.get("write")
        read_timeout = timeouts.get("read")
        pool = self._pool
        conn, reused = await pool.acquire(origin, timeouts.get("pool"), timeouts.get("connect"))
        try:
            try:
                await conn.send(data, head_request, close, write_timeout)
                await conn.receive_headers(read_timeout)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                if not reused or conn.state is not _WAITING:
                    raise
                # The server closed this keep-alive connection while we were choosing it: once more, on a new one.
                pool.replace(conn)
                conn = await pool.open(conn.origin, timeouts.get("connect"))
                await conn.send(data, head_request, close, write_timeout)
                await conn.receive_headers(read_timeout)
        except BaseException:
            pool.release(conn)
            raise
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=ResponseStream(conn, pool, timeouts),
            extensions={"http_version": conn.http_version, "reason_phrase": conn.reason},
        )

    async def aclose(self) -> None:
        """Close every connection; requests still streaming fail with a read error."""
        await self._pool.aclose()
