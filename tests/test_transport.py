"""piagent's own httpx transport against real loopback servers: streaming, pooling, timeouts, faults, cleanup."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest

from bench.fakemodel import FakeModel, Script
from piagent import Settings, create_app
from piagent.http.app import upstream_transport
from piagent.httpx_transport import CheckedHTTPTransport
from piagent.transport import BUFFER_LIMIT, HTTPToolsTransport, ResponseStream
from tests.servers import serve_in_thread
from tests.upstream import ollama_lines

pytestmark = pytest.mark.anyio

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
# The most a loop reads from a socket at once (asyncio's selector loop: 256 KiB): bytes already read when
# reading is paused still land in the buffer.
READ_SIZE = 256 * 1024


@asynccontextmanager
async def client_for(
    limits: httpx.Limits | None = None, timeouts: httpx.Timeout | float = 5.0
) -> AsyncIterator[tuple[httpx.AsyncClient, HTTPToolsTransport]]:
    transport = HTTPToolsTransport(limits or httpx.Limits(max_connections=4, max_keepalive_connections=4))
    async with httpx.AsyncClient(transport=transport, timeout=timeouts) as client:
        yield client, transport


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class TinyServer:
    """A few lines of asyncio HTTP on 127.0.0.1 for faults the fake Ollama does not script."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TinyServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request's head (its body, if any, is read and dropped)."""
        head = await reader.readuntil(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
        self.requests += 1
        return head


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


# ---------------------------------------------------------------------------------------------- streaming


async def test_streamed_chunks_arrive_as_the_server_sends_them(fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["a", "b", "c"], delay=0.15)
    arrivals: list[tuple[float, bytes]] = []
    async with client_for() as (client, _), client.stream("POST", f"{fake_ollama.url}/api/chat", json=CHAT) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        async for chunk in response.aiter_raw():
            arrivals.append((time.monotonic(), chunk))
    lines = [msgspec.json.decode(chunk) for _, chunk in arrivals]
    assert [line.get("message", {}).get("content") for line in lines] == ["a", "b", "c", ""]
    assert lines[-1]["done"] is True
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap > 0.075 for gap in gaps), gaps  # each line came when it was sent, not all at the end


async def test_keep_alive_connection_is_reused_across_requests(fake_ollama: FakeModel) -> None:
    async with client_for() as (client, transport):
        for _ in range(3):
            async with client.stream("POST", f"{fake_ollama.url}/api/chat", json=CHAT) as response:
                assert (await response.aread()).count(b"\n") == 5
            assert (await client.get(f"{fake_ollama.url}/api/version")).json() == {"version": "0.12.0"}
            assert (await client.post(f"{fake_ollama.url}/api/chat", json={**CHAT, "stream": False})).is_success
        assert fake_ollama.connection_count == 1
        assert (transport.connections, transport.idle_connections) == (1, 1)


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        pytest.param("GET", "/api/version", None, b'{"version":"0.12.0"}', id="version"),
        pytest.param("GET", "/", None, b"Ollama is running", id="root"),
        pytest.param("POST", "/api/chat", {**CHAT, "stream": False}, b'"content":"Hello, world!"', id="chat-json"),
        pytest.param("GET", "/api/nope", None, b'{"error":"not found"}', id="404"),
    ],
)
async def test_content_length_bodies_are_read_whole(
    fake_ollama: FakeModel, method: str, path: str, body: Any, expected: bytes
) -> None:
    async with client_for() as (client, transport):
        response = await client.request(method, f"{fake_ollama.url}{path}", json=body)
        assert int(response.headers["content-length"]) == len(response.content)
        assert expected in response.content
        assert response.http_version == "HTTP/1.1"
        assert response.reason_phrase == ("Not Found" if path == "/api/nope" else "OK")
        assert transport.idle_connections == 1


async def test_a_head_request_ends_at_the_headers_and_keeps_the_connection(fake_ollama: FakeModel) -> None:
    async with client_for() as (client, _):
        head = await client.head(f"{fake_ollama.url}/")
        assert head.status_code == 200
        assert head.headers["content-length"] == "17"
        assert head.content == b""
        assert (await client.get(f"{fake_ollama.url}/")).text == "Ollama is running"
    assert fake_ollama.connection_count == 1


@pytest.mark.parametrize(
    "status_line",
    [pytest.param(b"HTTP/1.1 200 OK", id="http-1.1"), pytest.param(b"HTTP/1.0 200 OK", id="http-1.0")],
)
async def test_a_body_ended_by_the_server_closing_is_read_whole(status_line: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.read_request(reader)
        writer.write(status_line + b"\r\nContent-Type: text/plain\r\n\r\nhello ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"world")
        await writer.drain()

    async with TinyServer(handler) as server, client_for() as (client, transport):
        response = await client.get(server.url)
        assert response.text == "hello world"
        assert transport.connections == 0  # such a connection is never reused


async def test_informational_responses_are_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + ok(b"done"))
        await reader.read()

    async with TinyServer(handler) as server, client_for() as (client, _):
        response = await client.post(server.url, content=b"x")
        assert (response.status_code, response.text) == (200, "done")
        assert "link" not in response.headers


async def test_a_request_body_of_unknown_length_is_sent_chunked(fake_ollama: FakeModel) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield msgspec.json.encode({**CHAT, "stream": False})[:10]
        yield msgspec.json.encode({**CHAT, "stream": False})[10:]

    async with client_for() as (client, _):
        response = await client.post(f"{fake_ollama.url}/api/chat", content=body())
        assert response.json()["message"]["content"] == "Hello, world!"
    assert fake_ollama.requests[-1].headers["transfer-encoding"] == "chunked"
    assert fake_ollama.chat_requests[-1] == {**CHAT, "stream": False}


async def test_a_response_asked_to_close_the_connection_is_not_reused(fake_ollama: FakeModel) -> None:
    async with client_for() as (client, transport):
        await client.get(f"{fake_ollama.url}/api/version", headers={"Connection": "close"})
        assert transport.connections == 0
        await client.get(f"{fake_ollama.url}/api/version")
    assert fake_ollama.connection_count == 2


# ---------------------------------------------------------------------------------------------- failures


async def test_a_refused_connection_raises_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again at once: nothing listens there
    async with client_for() as (client, transport):
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(f"http://127.0.0.1:{port}/")
        assert isinstance(caught.value.__cause__, OSError)
        assert caught.value.request.url.port == port
        assert transport.connections == 0


async def test_a_connect_that_does_not_finish_raises_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    async def never(*args: object, **kwargs: object) -> Any:
        await asyncio.Event().wait()  # a SYN nobody answers; loopback always answers, so the loop pretends

    monkeypatch.setattr(loop, "create_connection", never)
    async with client_for(timeouts=httpx.Timeout(5.0, connect=0.1)) as (client, transport):
        with pytest.raises(httpx.ConnectTimeout):
            await client.get("http://127.0.0.1:9/")
        assert transport.connections == 0


async def read_chat(client: httpx.AsyncClient, url: str, statuses: list[int]) -> bytes:
    """Stream one /api/chat reply to its end, noting the status once the headers are in."""
    async with client.stream("POST", f"{url}/api/chat", json=CHAT) as response:
        statuses.append(response.status_code)
        return await response.aread()


@pytest.mark.parametrize(
    ("script", "statuses"),
    [
        pytest.param(Script(reset_after=-1), [], id="reset-before-the-status-line"),
        pytest.param(Script(tokens=["t"] * 5, reset_after=2), [200], id="reset-mid-body"),
    ],
)
async def test_a_reset_connection_raises_a_transport_error(
    fake_ollama: FakeModel, script: Script, statuses: list[int]
) -> None:
    fake_ollama.script = script
    seen: list[int] = []
    async with client_for() as (client, transport):
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await read_chat(client, fake_ollama.url, seen)
        assert seen == statuses
        assert transport.connections == 0
    assert len(fake_ollama.chat_requests) == 1  # a fresh connection failing is never retried


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..", id="short-body"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", id="short-chunk"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-", id="in-the-headers"),
        pytest.param(b"", id="no-response"),
        pytest.param(b"HELLO THERE\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", id="bad-length"),
    ],
)
async def test_a_server_closing_early_or_breaking_http_raises_remote_protocol_error(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.read_request(reader)
        writer.write(answer)
        await writer.drain()

    async with TinyServer(handler) as server, client_for() as (client, transport):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url)
        assert transport.connections == 0
        assert server.requests == 1


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(Script(stall_before_headers=True), id="before-headers"),
        pytest.param(Script(tokens=["a", "b"], stall_after=1), id="mid-body"),
    ],
)
async def test_a_stalled_server_raises_read_timeout_and_loses_the_connection(
    fake_ollama: FakeModel, script: Script
) -> None:
    fake_ollama.script = script
    async with client_for(timeouts=httpx.Timeout(5.0, read=0.3)) as (client, transport):
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            async with client.stream("POST", f"{fake_ollama.url}/api/chat", json=CHAT) as response:
                await response.aread()
        assert 0.25 < time.monotonic() - started < 3
        assert transport.connections == 0
        assert await asyncio.to_thread(fake_ollama.wait_for_client_close, 2, started) is not None


async def test_the_read_timeout_bounds_each_wait_not_the_whole_reply(fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["t"] * 6, delay=0.15)
    async with client_for(timeouts=httpx.Timeout(5.0, read=0.4)) as (client, _):
        started = time.monotonic()
        reply = await client.post(f"{fake_ollama.url}/api/chat", json=CHAT)
        assert reply.content.count(b"\n") == 7
        assert time.monotonic() - started > 0.8  # twice the read timeout, yet no ReadTimeout


async def test_a_server_that_does_not_read_raises_write_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(10)  # never reads: the kernel buffers fill and the client must wait

    async with TinyServer(handler) as server, client_for(timeouts=httpx.Timeout(5.0, write=0.3)) as (client, t):
        with pytest.raises(httpx.WriteTimeout):
            await client.post(server.url, content=b"x" * (24 * 1024 * 1024))
        assert t.connections == 0


async def test_only_plain_http_is_spoken() -> None:
    async with client_for() as (client, _):
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.get("https://127.0.0.1:1/")


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(fake_ollama: FakeModel) -> None:
    async with client_for() as (client, _):
        with pytest.raises(httpx.LocalProtocolError):
            await client.get(f"{fake_ollama.url}/", headers={"X-Evil": "a\r\nX-Injected: 1"})
    assert fake_ollama.connection_count == 0


# ---------------------------------------------------------------------------------------------- the pool


async def test_a_request_waits_for_a_free_connection_and_then_reuses_it(fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["t"] * 4, delay=0.05)
    limits = httpx.Limits(max_connections=1)
    async with client_for(limits) as (client, _):
        async with client.stream("POST", f"{fake_ollama.url}/api/chat", json=CHAT) as first:
            second = asyncio.create_task(client.get(f"{fake_ollama.url}/api/version"))
            await asyncio.sleep(0.1)
            assert not second.done()  # no slot while the stream holds the only connection
            await first.aread()
        assert (await second).json() == {"version": "0.12.0"}
    assert fake_ollama.connection_count == 1


async def test_waiting_longer_than_the_pool_timeout_raises_pool_timeout(fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["t"] * 20, delay=0.05)
    async with client_for(httpx.Limits(max_connections=1), httpx.Timeout(5.0, pool=0.2)) as (client, transport):
        async with client.stream("POST", f"{fake_ollama.url}/api/chat", json=CHAT):
            started = time.monotonic()
            with pytest.raises(httpx.PoolTimeout):
                await client.get(f"{fake_ollama.url}/api/version")
            assert 0.15 < time.monotonic() - started < 2
        # the slot of the one that gave up is not lost
        assert (await client.get(f"{fake_ollama.url}/api/version")).is_success
        assert transport.connections == 1


async def test_aborting_a_stream_closes_its_connection_at_once(fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["t"] * 200, delay=0.05)
    async with client_for() as (client, transport):
        async with client.stream("POST", f"{fake_ollama.url}/api/chat", json=CHAT) as response:
            async for _ in response.aiter_raw():
                break
            left = time.monotonic()
        closed = await asyncio.to_thread(fake_ollama.wait_for_client_close, 2, left)
        assert closed is not None
        assert closed - left < 0.2
        assert transport.connections == 0
        fake_ollama.script = Script()
        assert (await client.post(f"{fake_ollama.url}/api/chat", json={**CHAT, "stream": False})).is_success
    assert fake_ollama.connection_count == 2  # the aborted connection was not reused


async def test_cancelling_a_request_closes_its_connection_at_once(fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(stall_before_headers=True)
    async with client_for() as (client, transport):
        task = asyncio.create_task(client.post(f"{fake_ollama.url}/api/chat", json=CHAT))
        assert await asyncio.to_thread(fake_ollama.wait_for_requests, 1, 2)
        left = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        closed = await asyncio.to_thread(fake_ollama.wait_for_client_close, 2, left)
        assert closed is not None
        assert closed - left < 0.2
        assert transport.connections == 0


async def test_an_idle_connection_the_server_closed_is_dropped_from_the_pool() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.read_request(reader)
        writer.write(ok(b"one %d" % n))  # promises keep-alive, then closes anyway
        await writer.drain()

    async with TinyServer(handler) as server, client_for() as (client, transport):
        assert (await client.get(server.url)).text == "one 1"
        for _ in range(100):  # the close reaches the client a moment later
            if transport.connections == 0:
                break
            await asyncio.sleep(0.01)
        assert (transport.connections, transport.idle_connections) == (0, 0)
        assert (await client.get(server.url)).text == "one 2"
    assert server.requests == 2


async def test_a_reused_connection_that_fails_before_any_byte_is_retried_once_on_a_new_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.read_request(reader)
        writer.write(ok(b"first answer on %d" % n))
        await writer.drain()
        await server.read_request(reader)  # the server timed the connection out just as the request came

    async with TinyServer(handler) as server, client_for() as (client, _):
        assert (await client.get(server.url)).text == "first answer on 1"
        assert (await client.get(server.url)).text == "first answer on 2"
    assert (server.connections, server.requests) == (2, 3)


async def test_the_retry_happens_once_only() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.read_request(reader)
        if n == 1:
            writer.write(ok(b"ok"))
            await writer.drain()
            await server.read_request(reader)

    async with TinyServer(handler) as server, client_for() as (client, transport):
        await client.get(server.url)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url)
        assert transport.connections == 0
    assert (server.connections, server.requests) == (2, 3)


async def test_idle_connections_beyond_the_keep_alive_limit_are_closed(fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["t"] * 3, delay=0.05)
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=1)
    async with client_for(limits) as (client, transport):
        replies = await asyncio.gather(
            *(client.post(f"{fake_ollama.url}/api/chat", json=CHAT) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(reply, httpx.Response) and reply.is_success for reply in replies)
        assert (transport.connections, transport.idle_connections) == (1, 1)
    assert fake_ollama.connection_count == 3


async def test_an_expired_idle_connection_is_not_reused(fake_ollama: FakeModel) -> None:
    async with client_for(httpx.Limits(keepalive_expiry=0.0)) as (client, _):
        await client.get(f"{fake_ollama.url}/api/version")
        await client.get(f"{fake_ollama.url}/api/version")
    assert fake_ollama.connection_count == 2


async def test_a_slow_reader_holds_back_a_fast_server(fake_ollama: FakeModel) -> None:
    piece = b"x" * 65536
    fake_ollama.script = Script(raw_body=[piece] * 64)  # 4 MiB, as fast as the socket takes it
    transport = HTTPToolsTransport()
    try:
        request = httpx.Request("POST", f"{fake_ollama.url}/api/chat", json=CHAT)
        response = await transport.handle_async_request(request)
        stream = response.stream
        assert isinstance(stream, ResponseStream)
        seen: list[int] = []
        total = 0
        async for chunk in stream:
            total += len(chunk)
            await asyncio.sleep(0.01)  # a consumer much slower than loopback
            seen.append(stream.buffered)
        await stream.aclose()
    finally:
        await transport.aclose()
    assert total == 64 * 65536
    assert max(seen) >= BUFFER_LIMIT  # it did fall behind...
    assert max(seen) <= BUFFER_LIMIT + READ_SIZE  # ...and the server was held back, not buffered whole


async def test_closing_the_transport_closes_every_connection(fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["t"] * 100, delay=0.05)
    transport = HTTPToolsTransport()
    client = httpx.AsyncClient(transport=transport)
    first = await client.send(client.build_request("POST", f"{fake_ollama.url}/api/chat", json=CHAT), stream=True)
    second = await client.send(client.build_request("POST", f"{fake_ollama.url}/api/chat", json=CHAT), stream=True)
    await client.get(f"{fake_ollama.url}/api/version")
    assert (transport.connections, transport.idle_connections) == (3, 1)
    await client.aclose()
    assert await asyncio.to_thread(fake_ollama.wait_for_open_connections, 0, 2)
    with pytest.raises(httpx.ReadError):
        await first.aread()
    await first.aclose()
    await second.aclose()
    assert transport.connections == 0


# ---------------------------------------------------------------------------------------------- the app


async def test_the_app_uses_it_for_a_plain_http_upstream_on_asyncio() -> None:
    limits = httpx.Limits(max_connections=2)
    assert isinstance(upstream_transport(Settings(ollama_url="http://127.0.0.1:1"), limits), HTTPToolsTransport)
    assert isinstance(upstream_transport(Settings(ollama_url="https://ollama.example"), limits), CheckedHTTPTransport)
    off = Settings(ollama_url="http://127.0.0.1:1", fast_transport=False)
    assert isinstance(upstream_transport(off, limits), CheckedHTTPTransport)


def test_the_app_falls_back_without_a_running_asyncio_loop() -> None:
    assert isinstance(upstream_transport(Settings(), httpx.Limits()), CheckedHTTPTransport)


def test_an_injected_transport_wins_over_the_fast_one(make_settings: Callable[..., Settings]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=ollama_lines(["from", " the", " mock"]))

    app = create_app(make_settings(fast_transport=True), transport=httpx.MockTransport(answer))
    with serve_in_thread(app) as url:
        assert httpx.post(f"{url}/chat", json={"message": "hi"}).json()["reply"] == "from the mock"


def test_the_served_app_closes_its_upstream_connections_on_shutdown(
    serve: Callable[..., Any], fake_ollama: FakeModel
) -> None:
    with serve() as url, httpx.Client(base_url=url) as client:
        assert client.post("/chat", json={"message": "hi"}).json()["reply"] == "Hello, world!"
        assert client.post("/chat", json={"message": "hi", "stream": True}).text == "Hello, world!"
        assert fake_ollama.open_connections == 1
    assert fake_ollama.wait_for_open_connections(0, timeout=2)
    assert fake_ollama.connection_count == 1


# ---------------------------------------------------------------------------------------------- post()


async def test_post_sends_the_bytes_an_httpx_request_would_and_keeps_one_head_per_url_and_headers() -> None:
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(v) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")) if k == b"Content-Length"
            )
            seen.append(head + await reader.readexactly(length))
            writer.write(ok(b"{}"))
            await writer.drain()

    headers = httpx.Headers(
        {"User-Agent": "piagent/test", "Content-Type": "application/json", "Authorization": "Bearer k"}
    )
    async with TinyServer(answer) as server, client_for() as (_, transport):
        url = httpx.URL(f"{server.url}/api/chat")
        for body in (b'{"a":1}', b'{"message":"' + "é".encode() * 300 + b'"}'):
            request = httpx.Request("POST", url, content=body, headers=headers, extensions={"timeout": {"read": 5.0}})
            await (await transport.handle_async_request(request)).aread()
            response = await transport.post(url, headers, body, {"read": 5.0})
            assert response.status_code == 200
            assert await response.aread() == b"{}"
        assert seen[0] == seen[1]  # byte for byte what an httpx.Request carries
        assert seen[2] == seen[3]
        assert server.connections == 1  # and on the same kept-alive connection
        assert len(transport._heads) == 1
        with pytest.raises(httpx.UnsupportedProtocol):
            await transport.post(httpx.URL("https://127.0.0.1:1/x"), headers, b"", {})
        with pytest.raises(httpx.LocalProtocolError):  # a header that would split the request, as ever
            await transport.post(url, httpx.Headers({"X-Evil": "a\r\nX-Injected: 1"}), b"", {})
        assert len(seen) == 4


async def test_posts_kept_heads_are_bounded() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(ok(b""))
            await writer.drain()

    async with TinyServer(answer) as server, client_for() as (_, transport):
        headers = httpx.Headers()
        urls = [httpx.URL(f"{server.url}/{i}") for i in range(300)]
        for url in urls:
            await (await transport.post(url, headers, b"", {"read": 5.0})).aclose()
        assert 0 < len(transport._heads) <= 256
