"""uvicorn's two HTTP protocols with piagent's edge limits: bounded request heads, head and body timeouts, a cap.

Left alone, uvicorn reads a request head without bound (httptools joins a header's pieces with `bytes +=`,
so a 150 MB header blocks the loop for a minute), waits for ever for a head that never completes, and
accepts connections until the process runs out of descriptors. These subclasses, handed to uvicorn's `http=`
option, answer before the app (and so the API key check) runs:

- a head over `max_header_bytes`, or with more than `max_headers` fields: 431, then close. Bytes are counted
  before the parser sees them, so the parser never holds more than the limit and the rest is never read;
- a head not complete `header_timeout` seconds after it started (or after the connection opened): 408
  if a byte of it arrived, then close;
- a request body silent for `body_timeout` seconds while the app waits for it: close (the app sees a
  disconnect);
- a connection past `max_open_connections`: 503 and close at once, before anything is read.

Each connection holds at most one timer of its own (head or body), armed when that state starts and
cancelled when it ends; the body timer re-arms itself from a timestamp rather than on every read.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Any, ClassVar, NamedTuple

import h11
import msgspec
from uvicorn.protocols.http.h11_impl import H11Protocol

from piagent.exceptions import HeadersTooLarge, PiagentError, RequestTimeout, TooManyConnections
from piagent.schemas import ErrorBody, ErrorDetail

logger = logging.getLogger("piagent.server")


class EdgeLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What one client connection may cost: head size and fields, head and body timeouts, connections open."""

    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    max_open_connections: int


class _Answers(NamedTuple):
    """The complete responses a protocol writes itself, built once per set of limits."""

    too_large: bytes
    too_many_fields: bytes
    timeout: bytes
    too_many_connections: bytes


def _raw_response(exc: PiagentError, extra: bytes = b"") -> bytes:
    body = msgspec.json.encode(ErrorBody(ErrorDetail(exc.code, exc.message)))
    head = (
        f"HTTP/1.1 {exc.status_code} {http.HTTPStatus(exc.status_code).phrase}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n"
    )
    return head.encode("ascii") + extra + b"\r\n" + body


def _answers(limits: EdgeLimits) -> _Answers:
    return _Answers(
        _raw_response(HeadersTooLarge(f"the request head is over {limits.max_header_bytes} bytes")),
        _raw_response(HeadersTooLarge(f"the request has more than {limits.max_headers} header fields")),
        _raw_response(RequestTimeout(f"the request head did not arrive within {limits.header_timeout:g} s")),
        _raw_response(
            TooManyConnections(f"piagent has its {limits.max_open_connections} connections open; try again shortly"),
            b"retry-after: 1\r\n",
        ),
    )


class TooManyFields(Exception):
    """Raised inside a parser to stop reading a head with too many fields."""


class _TooLarge(Exception):
    """Raised from h11 when its own buffer limit (the head byte limit) is passed."""


class Edge(asyncio.Protocol):
    """What both protocols share: the connection cap, the one timer and the answers written before closing."""

    # Set on the subclass `with_limits` makes for one set of limits.
    limits: ClassVar[EdgeLimits]
    answers: ClassVar[_Answers]

    # Set by uvicorn's protocol classes, which come after this one in the MRO.
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any
    flow: Any

    _timer: asyncio.TimerHandle | None = None
    _head_left = 0  # bytes the request head being read may still take; -1 while a body is read
    _head_started = False  # a byte of the current head arrived, so a timeout is answered with 408
    _body_seen = 0.0  # loop time of the last body bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Refuse the connection past the cap; otherwise start the head timer."""
        over = len(self.connections) >= self.limits.max_open_connections
        super().connection_made(transport)
        if over:
            # No linger and no read: a flood of connections must not hold descriptors past the cap.
            logger.debug("Refusing a connection: %d open", len(self.connections) - 1)
            self.transport.write(self.answers.too_many_connections)
            self.transport.close()
            return
        self._head_left = self.limits.max_header_bytes
        self._timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel this connection's timer with it."""
        self._cancel_timer()
        super().connection_lost(exc)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start_head_timer(self) -> None:
        self._head_started = True
        if self._timer is None:
            self._timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _start_body_timer(self) -> None:
        self._cancel_timer()
        self._body_seen = self.loop.time()
        self._timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    def _refuse(self, answer: bytes) -> None:
        """Write `answer` unless a response is on the wire (it would interleave), and close."""
        self._cancel_timer()
        if not self.transport.is_closing():
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(answer)
            self.transport.close()

    def _head_timed_out(self) -> None:
        self._timer = None
        self._refuse(self.answers.timeout if self._head_started else b"")

    def _body_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        idle = self.loop.time() - self._body_seen
        if self.flow.read_paused:  # the app is not reading: the silence is not the client's
            self._body_seen += idle
            idle = 0.0
        if idle < self.limits.body_timeout:
            self._timer = self.loop.call_later(self.limits.body_timeout - idle, self._body_timed_out)
        else:
            self.transport.close()


class _LimitedConnection(h11.Connection):
    """h11's connection with a cap on header fields; its buffer limit (the head limit) ends as a 431."""

    def __init__(self, limits: EdgeLimits) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.max_headers = limits.max_headers

    def next_event(self) -> Any:
        """The next event, or `_TooLarge`/`TooManyFields` raised for a head over its limits."""
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                raise _TooLarge from exc
            raise
        if type(event) is h11.Request and len(event.headers) > self.max_headers:
            raise TooManyFields
        return event


class EdgeH11Protocol(Edge, H11Protocol):
    """uvicorn's pure-Python h11 protocol with piagent's edge limits."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _LimitedConnection(self.limits)

    def data_received(self, data: bytes) -> None:
        """Count a head's bytes before h11 buffers them; note when body bytes arrive."""
        self._unset_keepalive_if_required()
        state = self.conn.their_state
        if state is h11.IDLE:
            self._start_head_timer()
            left = self._head_left
            if len(data) > left:
                # Hand h11 only what the head may still take: a head not complete by then is too large.
                self._head_left = 0
                self.conn.receive_data(data[:left])
                self.handle_events()
                if self.transport.is_closing():
                    return
                if self.conn.their_state is h11.IDLE:
                    self._refuse(self.answers.too_large)
                    return
                data = data[left:]
            else:
                self._head_left = left - len(data)
        elif state is h11.SEND_BODY:
            self._body_seen = self.loop.time()
        self.conn.receive_data(data)
        self.handle_events()

    def handle_events(self) -> None:
        """uvicorn's event loop over h11, then the timer that fits the state it left the request in."""
        try:
            super().handle_events()
        except _TooLarge:
            self._refuse(self.answers.too_large)
            return
        except TooManyFields:
            self._refuse(self.answers.too_many_fields)
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            return  # waiting for a head, or reading one: the head timer runs if bytes came
        if state is h11.SEND_BODY:
            if self._head_left >= 0:  # the head just completed
                self._head_left = -1
                self._head_started = False
                self._start_body_timer()
        else:
            self._head_left = self.limits.max_header_bytes
            self._head_started = False
            self._cancel_timer()


def with_limits(base: type[Edge], limits: EdgeLimits) -> type[Edge]:
    """A subclass of `base` (one of the protocols) that holds `limits` and the answers they need."""
    return type(base.__name__, (base,), {"limits": limits, "answers": _answers(limits)})
