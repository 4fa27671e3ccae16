"""A model server that misbehaves on purpose, for the hostile-upstream tests: real HTTP/1.1 on 127.0.0.1.

It answers Ollama's `/api/chat` (NDJSON) and the OpenAI `/v1/chat/completions` (server-sent events) with
whatever `behaviour` the test sets: a huge error body, a reply that never stops growing, a compressed body
although piagent asked for none, or a whole reply after which the body stays open. Bodies are generated as
they are written, so the fake itself holds no more than one block of them; it counts the bytes it managed to
write and notes when the client closed, so a test can tell that piagent stopped reading early.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Self

Writer = Callable[[bytes], Awaitable[None]]
# A behaviour gets the protocol ("ollama" or "openai") and a writer; returns whether the connection stays open
# for another request (True), closes (False) or is held open, silent, until the client closes it (None).
Behaviour = Callable[[str, Writer], Awaitable[bool | None]]

_BLOCK = 64 * 1024


def _line(protocol: str, content: str = "", done: bool = False, usage: bool = True) -> bytes:
    """One reply line as the protocol writes it: an NDJSON chunk or a `data:` event."""
    if protocol == "ollama":
        obj: dict[str, object] = {"model": "m", "message": {"role": "assistant", "content": content}, "done": done}
        if done:
            obj.update(done_reason="stop", prompt_eval_count=3, eval_count=2)
        return json.dumps(obj).encode() + b"\n"
    if done:
        finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        events = [finish, {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}] if usage else [finish]
        return b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": content}}]}).encode() + b"\n\n"


def _head(status: int, extra: Iterable[str] = (), length: int | None = None) -> bytes:
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    lines = [f"HTTP/1.1 {status} X", "Content-Type: application/octet-stream", framing, *extra, "", ""]
    return "\r\n".join(lines).encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def polite(protocol: str, write: Writer, end_delay: float = 0.0) -> bool:
    """A short, whole reply ("Hello"), chunked, on a connection kept alive; its body ends `end_delay` s after
    its last line."""
    await write(_head(200) + _chunk(_line(protocol, "Hello")) + _chunk(_line(protocol, done=True)))
    if protocol == "openai":
        await write(_chunk(b"data: [DONE]\n\n"))
    if end_delay:
        await asyncio.sleep(end_delay)
    await write(b"0\r\n\r\n")
    return True


def error_body(size: int, status: int = 500) -> Behaviour:
    """An error status whose body is `size` bytes of one never-ending error text."""

    async def behave(protocol: str, write: Writer) -> bool:
        start = b'{"error": "' + b"x" * (_BLOCK - 11)
        await write(_head(status, length=size) + start)
        sent = len(start)
        block = b"x" * _BLOCK
        while sent < size:
            part = block[: size - sent]
            await write(part)
            sent += len(part)
        return True

    return behave


def long_reply(lines: int, line_bytes: int) -> Behaviour:
    """A reply of `lines` pieces of `line_bytes` characters each, then its end."""

    async def behave(protocol: str, write: Writer) -> bool:
        await write(_head(200))
        piece = _chunk(_line(protocol, "y" * line_bytes))
        for _ in range(lines):
            await write(piece)
        await write(_chunk(_line(protocol, done=True)) + b"0\r\n\r\n")
        return True

    return behave


def _bomb_lines(protocol: str, total: int) -> Iterator[bytes]:
    block = _line(protocol, "z" * 1000) * 64
    for _ in range(total // len(block)):
        yield block
    yield _line(protocol, done=True)


def gzip_bomb(protocol: str, total: int) -> bytes:
    """A gzip body that inflates to `total` bytes of well-formed reply lines (compressed about 140 to 1)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    return b"".join(packer.compress(block) for block in _bomb_lines(protocol, total)) + packer.flush()


def compressed(bodies: dict[str, bytes]) -> Behaviour:
    """A 200 whose body is the protocol's entry of `bodies`, sent with `Content-Encoding: gzip`."""

    async def behave(protocol: str, write: Writer) -> bool:
        body = bodies[protocol]
        await write(_head(200, ["Content-Encoding: gzip"], length=len(body)) + body)
        return True

    return behave


def huge_head(size: int) -> Behaviour:
    """A 200 whose head goes on for `size` bytes of one header field (the answer never comes)."""

    async def behave(protocol: str, write: Writer) -> bool:
        await write(b"HTTP/1.1 200 OK\r\nX-Padding: ")
        block = b"p" * _BLOCK
        for _ in range(size // _BLOCK):
            await write(block)
        await write(b"\r\nContent-Length: 2\r\n\r\nok")
        return False

    return behave


def done_then_open(usage: bool = True, done_marker: bool = True) -> Behaviour:
    """A whole reply (its done line; for OpenAI its finish, usage unless not `usage`, and `[DONE]` unless not
    `done_marker`), after which the body stays open until the client closes the connection."""

    async def behave(protocol: str, write: Writer) -> bool:
        await write(_head(200) + _chunk(_line(protocol, "Hello")) + _chunk(_line(protocol, done=True, usage=usage)))
        if protocol == "openai" and done_marker:
            await write(_chunk(b"data: [DONE]\n\n"))
        return None

    return behave


class HostileUpstream:
    """A misbehaving model server in a background thread; `behaviour` decides how it answers each chat."""

    def __init__(self) -> None:
        self.url = ""
        self.behaviour: Behaviour = polite
        self.other = b"{}"  # the 200 body of every other path (/api/version, /api/tags, /v1/models)
        self.written = 0  # bytes of the last chat answer that reached the socket
        self.connections = 0  # connections accepted so far
        self.closed_at: list[float] = []  # monotonic times at which a client closed a connection
        self.requests: list[dict[str, str]] = []  # the head of each chat request, names lower-cased
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(5)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def wait_for_close(self, after: float, timeout: float) -> float | None:
        """The first time a client closed a connection after `after`, waiting up to `timeout` s for one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [when for when in self.closed_at if when >= after]
            if found:
                return found[0]
            time.sleep(0.01)
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1

        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()
            self.written += len(data)

        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
                await reader.readexactly(int(headers.get("content-length", "0")))
                path = lines[0].split(" ")[1]
                if not path.endswith("/chat") and not path.endswith("/completions"):
                    await write(_head(200, length=len(self.other)) + self.other)
                    continue
                self.requests.append(headers)
                self.written = 0
                keep = await self.behaviour("ollama" if path.startswith("/api/") else "openai", write)
                if keep is None:
                    while await reader.read(_BLOCK):
                        pass
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed_at.append(time.monotonic())
            with contextlib.suppress(Exception):
                writer.close()
