"""The floor of a relay in Python on this machine: one upstream read in, one client write out, nothing else.

``python bench/relay.py --port P --upstream-port U`` serves any HTTP/1.1 keep-alive request by sending one fixed
streaming ``POST /api/chat`` to the fake model server at ``U`` (one kept-alive upstream connection per client
connection) and writing each upstream read to the client as it arrives, chunked framing and NDJSON lines passed
through untouched: no parsing beyond finding the heads' ends and the body's terminator, no JSON, no memory, no
middleware. What a token costs it (``bench/run.py`` measures its CPU time in the trickle scenario) is the event
loop's wake-up, the two system calls and the interpreter's own per-callback work: what any asyncio relay pays
per token on this machine before doing anything of its own. Raw asyncio Protocols on uvloop, as the fake uses.
"""

from __future__ import annotations

import argparse
import asyncio

_UPSTREAM_BODY = b'{"model":"bench","messages":[{"role":"user","content":"hi"}],"stream":true}'
_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
_END = b"0\r\n\r\n"


class _Upstream(asyncio.Protocol):
    """The kept-alive connection to the fake for one client connection: its body goes straight to the client."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.in_head = True
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        out = self.client.transport
        if self.in_head:
            data = self.buffer + data
            end = data.find(b"\r\n\r\n")
            if end == -1:
                self.buffer = data
                return
            self.in_head, self.buffer = False, b""
            data = data[end + 4 :]
            if not data:
                return
        if out is not None:
            out.write(data)
        if data.endswith(_END):  # the fake ends its body with the terminator in the last read
            self.in_head = True
            self.client.answered()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class _Client(asyncio.Protocol):
    """One client connection: each complete request starts one upstream reply."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.buffer = b""
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def _next(self) -> None:
        if self.busy:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end == -1:
            return
        head = self.buffer[:end].lower()
        length = 0
        at = head.find(b"content-length:")
        if at != -1:
            length = int(head[at + 15 :].split(b"\r\n", 1)[0])
        if len(self.buffer) < end + 4 + length:
            return
        self.buffer = self.buffer[end + 4 + length :]
        self.busy = True
        asyncio.get_running_loop().create_task(self._ask())

    async def _ask(self) -> None:
        if self.upstream is None or self.upstream.transport is None or self.upstream.transport.is_closing():
            loop = asyncio.get_running_loop()
            _, self.upstream = await loop.create_connection(lambda: _Upstream(self), "127.0.0.1", self.upstream_port)
        assert self.transport is not None
        assert self.upstream.transport is not None
        self.transport.write(_HEAD)
        self.upstream.transport.write(
            b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(_UPSTREAM_BODY), _UPSTREAM_BODY)
        )

    def answered(self) -> None:
        self.busy = False
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


async def serve(port: int, upstream_port: int) -> None:
    """Serve until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(upstream_port), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Parse the arguments and serve on uvloop."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port, args.upstream_port))


if __name__ == "__main__":
    main()
