"""uvicorn's httptools protocol (its default when httptools is installed) with piagent's edge limits."""

from __future__ import annotations

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from piagent.protocols import Edge, TooManyFields

# Wire bytes a chunk's own framing may take (its size line and CRLF) beside the body bytes it carries.
CHUNK_FRAMING = 32


class EdgeHttpToolsProtocol(Edge, HttpToolsProtocol):
    """uvicorn's httptools protocol (its default when installed) with piagent's edge limits.

    httptools joins a field's pieces with `bytes +=` in trailers too, after a chunked body: so while a
    body is read, the bytes that are not body (chunk framing, trailers) get the head's budget plus
    `CHUNK_FRAMING` per chunk.
    """

    _fields_left = 0
    _framing_left = 0  # while a body is read: wire bytes that are not body it may still send

    def data_received(self, data: bytes) -> None:
        """Count a head's bytes before httptools sees them; note when body bytes arrive."""
        while len(data) > self._head_left >= 0:
            # Parse only what the head may still take: a head not complete by then is too large.
            left = self._head_left
            self._head_left = 0
            self._feed(data[:left])
            if self.transport.is_closing():
                return
            if self._head_left == 0:  # neither complete (-1) nor followed by a new request (the full budget)
                self._refuse(self.answers.too_large)
                return
            data = data[left:]
        if self._head_left >= 0:
            self._head_left -= len(data)
        else:
            self._body_seen = self.loop.time()
            self._framing_left -= len(data)  # on_body gives the body's share back
        self._feed(data)
        if self._head_left < 0 and not self.transport.is_closing():
            if self._framing_left < 0:
                self._refuse(self.answers.too_large)
            elif not self._body_seen:  # the head completed in this read
                self._begin_body()

    def _feed(self, data: bytes) -> None:
        # uvicorn's own data_received, told apart from a parse error when a limit stopped the parser.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, TooManyFields):
                self._refuse(self.answers.too_many_fields)
            else:
                self._bad_request()
        except httptools.HttpParserError:
            self._bad_request()
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _bad_request(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    def on_message_begin(self) -> None:
        """A new request starts: its head deadline (unless the connection's first runs) and field count."""
        super().on_message_begin()
        self._fields_left = self.limits.max_headers
        self._begin_head()

    def on_header(self, name: bytes, value: bytes) -> None:
        """uvicorn's on_header, stopping the parser past the field limit."""
        self._fields_left -= 1
        if self._fields_left < 0:
            raise TooManyFields
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        """The head is in: its deadline ends, and the app starts."""
        self._end_head()
        self._head_left = -1
        self._framing_left = self.limits.max_header_bytes
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """uvicorn's on_body; body bytes do not count against the framing budget."""
        self._framing_left += len(body)
        super().on_body(body)

    def on_chunk_header(self) -> None:
        """Each chunk of a chunked body may spend `CHUNK_FRAMING` bytes on its framing."""
        self._framing_left += CHUNK_FRAMING

    def on_message_complete(self) -> None:
        """The body is in: its deadline ends, and the next head gets the full budget."""
        self._body_seen = 0.0
        self._head_left = self.limits.max_header_bytes
        super().on_message_complete()
