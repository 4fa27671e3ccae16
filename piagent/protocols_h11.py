"""uvicorn's pure-Python h11 protocol with piagent's edge limits (used when httptools is not installed)."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from piagent.protocols import Edge, EdgeLimits, TooManyFields


class TooLarge(Exception):
    """Raised from h11 when its own buffer limit (the head byte limit) is passed."""


class _LimitedConnection(h11.Connection):
    """h11's connection with a cap on header fields; its buffer limit (the head limit) ends as a 431."""

    def __init__(self, limits: EdgeLimits) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.max_headers = limits.max_headers

    def next_event(self) -> Any:
        """The next event, or `TooLarge`/`TooManyFields` raised for a head over its limits."""
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                raise TooLarge from exc
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
            self._begin_head()
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
        except TooLarge:
            self._refuse(self.answers.too_large)
            return
        except TooManyFields:
            self._refuse(self.answers.too_many_fields)
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            return  # waiting for a head, or reading one: its deadline runs if bytes came
        if state is h11.SEND_BODY:
            if self._head_left >= 0:  # the head just completed
                self._head_left = -1
                self._end_head()
                self._begin_body()
        else:
            self._head_left = self.limits.max_header_bytes
            self._end_head()
            self._body_seen = 0.0
