"""One client connection of the fake: parses requests in order, routes them, writes (and misbehaves) per script.

A raw ``asyncio.Protocol``, so the benchmark's no-delay replies are written synchronously from ``data_received``
(one write per token line, no task), and the moment a client leaves is seen at once (``eof_received`` or
``connection_lost``), also in the middle of a stalled reply. Scripted delays and faults run in a task; the requests
pipelined behind it wait for it, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import msgspec

from .parsing import BadRequest, Head, parse_body, parse_head
from .replies import route
from .scripts import Recorded

if TYPE_CHECKING:
    from .server import FakeModel

__all__ = ["Connection"]


class Connection(asyncio.Protocol):
    """Serves one TCP connection for a :class:`~bench.fakemodel.server.FakeModel`."""

    def __init__(self, fake: FakeModel) -> None:
        self.fake = fake
        self.serial = 0
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head: Head | None = None
        self.busy = False  # a scripted reply is being written; later requests wait (pipelining order)
        self.task: asyncio.Task[None] | None = None
        self.left = asyncio.Event()
        self.local_close = False  # the fake closed or reset it: not a client leaving
        self._drained: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.serial = self.fake.opened(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._guard(self.process)

    def eof_received(self) -> bool:
        self._client_left()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._client_left()
        if self.task is not None:
            self.task.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self.transport = None
        self.fake.closed(self)

    def pause_writing(self) -> None:
        self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def _client_left(self) -> None:
        if not self.left.is_set():
            self.left.set()
            if not self.local_close:
                self.fake.client_closed(time.monotonic())
            if self.task is not None:
                self.task.cancel()

    # ------------------------------------------------------------------ helpers

    def _guard(self, work: Callable[[], None]) -> None:
        """Run ``work``; a bug in the fake goes to ``fake.errors`` and ends the connection."""
        try:
            work()
        except Exception as exc:
            self.fake.errors.append(exc)
            self.abort()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._drained is not None:
            await self._drained

    def close(self) -> None:
        """Close after what was written (FIN)."""
        self.local_close = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Tear the connection down at once."""
        self.local_close = True
        if self.transport is not None:
            self.transport.abort()

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0)."""
        if self.transport is not None:
            sock = self.transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.abort()

    # ------------------------------------------------------------------ requests

    def process(self) -> None:
        """Parse and answer the complete requests in the buffer, in order, until one needs a task."""
        fake = self.fake
        while self.buf and not self.busy and self.transport is not None and not self.transport.is_closing():
            try:
                if self.head is None:
                    self.head = parse_head(self.buf, fake.recording)
                    if self.head is None:
                        return
                head = self.head
                parsed = parse_body(self.buf, head)
                if parsed is None:
                    if not head.continue_sent and "100-continue" in head.headers.get("expect", "").lower():
                        head.continue_sent = True
                        self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    return
            except BadRequest as bad:
                fake.stats.bad_requests += 1
                self.write(fake.wire.json(bad.status, {"error": bad.message}, False))
                self.close()
                return
            body, stop = parsed
            del self.buf[:stop]
            self.head = None
            try:
                value: Any = msgspec.json.decode(body) if body else None
            except msgspec.DecodeError:
                value = None
            request = Recorded(head.method, head.path, head.headers, value, time.monotonic(), self.serial, body)
            fake.record(request)
            route(self, request, head.keep_alive)
            if not head.keep_alive and not self.busy:
                self.close()
