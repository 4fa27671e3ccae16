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

Each connection holds at most one timer of its own. A head or a body records when it began (or last
sent bytes); the timer fires at the earliest deadline and looks at the state it finds, so requests in
quick succession on one connection re-arm nothing.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Any, ClassVar, NamedTuple

import msgspec

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

    # One timer per connection, re-armed lazily: a state records when it began (a float), and the timer,
    # when it fires, checks the state it finds. Back-to-back requests on a kept-alive connection so cost
    # a loop.time() each, not a call_later and a cancel (3-4 µs with uvloop).
    _timer: asyncio.TimerHandle | None = None
    _timer_at = 0.0  # loop time the pending timer fires
    _head_left = 0  # bytes the request head being read may still take; -1 while a body is read
    _head_since = 0.0  # loop time the current head began (or the connection opened); 0.0: no head read
    _head_started = False  # a byte of the current head arrived, so a timeout is answered with 408
    _body_seen = 0.0  # loop time of the last body bytes; 0.0: no body read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Refuse the connection past the cap; otherwise its first head is due within the head timeout."""
        over = len(self.connections) >= self.limits.max_open_connections
        super().connection_made(transport)
        if over:
            # No linger and no read: a flood of connections must not hold descriptors past the cap.
            logger.debug("Refusing a connection: %d open", len(self.connections) - 1)
            self.transport.write(self.answers.too_many_connections)
            self.transport.close()
            return
        self._head_left = self.limits.max_header_bytes
        self._head_since = self.loop.time()
        self._watch(self._head_since, self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel this connection's timer with it."""
        self._cancel_timer()
        super().connection_lost(exc)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _watch(self, now: float, delay: float) -> None:
        # The timer must fire within `delay`: arm it, or bring a later one forward. (call_later, not
        # call_at: uvloop's call_at costs about three times as much.)
        deadline = now + delay
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_later(delay, self._check)

    def _begin_head(self) -> None:
        """A byte of a request head arrived; its deadline runs from now unless one already runs."""
        self._head_started = True
        if not self._head_since:
            self._head_since = self.loop.time()
            self._watch(self._head_since, self.limits.header_timeout)

    def _end_head(self) -> None:
        self._head_since = 0.0
        self._head_started = False

    def _begin_body(self) -> None:
        self._body_seen = self.loop.time()
        self._watch(self._body_seen, self.limits.body_timeout)

    def _refuse(self, answer: bytes) -> None:
        """Write `answer` for a refused head, unless a response is on the wire (it would interleave); close.

        While a body is read (trailers, framing) the app owns the answer: it sees the disconnect.
        """
        self._cancel_timer()
        if not self.transport.is_closing():
            if self._head_left >= 0 and (self.cycle is None or self.cycle.response_complete):
                self.transport.write(answer)
            self.transport.close()

    def _check(self) -> None:
        # The timer fired: close what is overdue, or wait for the state's own deadline.
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._head_since:
            deadline = self._head_since + self.limits.header_timeout
            if now >= deadline:
                self._refuse(self.answers.timeout if self._head_started else b"")
                return
            self._watch(now, deadline - now)
        elif self._body_seen:
            if self.flow.read_paused:  # the app is not reading: the silence is not the client's
                self._body_seen = now
            deadline = self._body_seen + self.limits.body_timeout
            if now >= deadline:
                self.transport.close()
                return
            self._watch(now, deadline - now)
        # Else between requests: uvicorn's keep-alive timeout watches the connection.


def with_limits(base: type[Edge], limits: EdgeLimits) -> type[Edge]:
    """A subclass of `base` (one of the protocols) that holds `limits` and the answers they need."""
    return type(base.__name__, (base,), {"limits": limits, "answers": _answers(limits)})
