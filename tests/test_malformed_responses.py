"""Hostile and malformed responses on both upstream transports: bounded heads, ambiguous framing, leftover
bytes, and responses their caller abandoned. The choices are in piagent/transport.py's docstring."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from bench.fakemodel import FakeModel, Script
from piagent.httpx_transport import CheckedHTTPTransport
from piagent.transport import HTTPToolsTransport
from tests.servers import TRANSPORTS, both_transports
from tests.test_transport import CHAT, TinyServer, ok

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def client_for(
    fast: bool, limits: httpx.Limits | None = None, timeouts: httpx.Timeout | float = 5.0
) -> AsyncIterator[httpx.AsyncClient]:
    """A client on piagent's own transport (`fast`) or on httpx's default one as piagent builds it."""
    limits = limits or httpx.Limits(max_connections=4, max_keepalive_connections=4)
    transport = HTTPToolsTransport(limits) if fast else CheckedHTTPTransport(limits=limits)
    async with httpx.AsyncClient(transport=transport, timeout=timeouts) as client:
        yield client


def answering(first: bytes, then: Callable[[int], bytes]) -> TinyServer:
    """A server whose first answer is `first`, and every later one `then(the connection's number)`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        answer = first if n == 1 else then(n)
        while True:
            await server.read_request(reader)
            writer.write(answer)
            await writer.drain()
            answer = then(n)

    server = TinyServer(handler)
    return server


def second(n: int) -> bytes:
    return ok(b"second on %d" % n)


# ---------------------------------------------------------------------------------------------- heads


# What each transport says: piagent's at 64 KiB and 100 fields (its defaults), httpx's at 100 KiB (h11's bound
# as httpcore sets it; no count of its own).
TOO_LARGE = ("the response head is over 65536 bytes", "the response head has more than 100", "Receive buffer too long")


@pytest.mark.parametrize("fast", TRANSPORTS)
@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"X-Big: " + b"a" * (4 * 1024 * 1024) + b"\r\n", id="one-huge-header"),
        pytest.param(b"X-A: b\r\n" * 40_000, id="many-small-headers"),
    ],
)
async def test_a_response_head_over_its_bound_is_refused_on_both_transports(fast: bool, head: bytes) -> None:
    answer = b"HTTP/1.1 200 OK\r\n" + head + b"Content-Length: 5\r\n\r\nhello"
    async with answering(answer, second) as server, client_for(fast) as client:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.get(server.url)
        assert str(caught.value).startswith(TOO_LARGE)
        assert (await client.get(server.url)).text == "second on 2"  # the connection was not reused


async def test_piagent_transport_counts_informational_answers_in_the_head() -> None:
    # httpx's transport reads and drops them one by one (bounded memory, no bound on their number).
    answer = b"HTTP/1.1 100 Continue\r\n\r\n" * 20_000 + ok(b"hello")
    async with answering(answer, second) as server, client_for(True) as client:
        with pytest.raises(httpx.RemoteProtocolError, match=r"^the response head is over 65536 bytes$"):
            await client.get(server.url)


async def test_piagent_transport_bounds_the_header_count_and_the_head_exactly() -> None:
    many = b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"Content-Length: 2\r\n\r\nok"
    limits = httpx.Limits(max_connections=1)
    async with answering(many, second) as server, httpx.AsyncClient(transport=HTTPToolsTransport(limits)) as client:
        with pytest.raises(httpx.RemoteProtocolError, match=r"^the response head has more than 100 header"):
            await client.get(server.url)
    # one write, one read: the head ends in the same read that passes the bound
    head = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 2000 + b"\r\nContent-Length: 2\r\n\r\nok"
    transport = HTTPToolsTransport(limits, max_head_bytes=1024, max_headers=1000)
    async with answering(head, lambda n: head) as server:
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(httpx.RemoteProtocolError, match=r"^the response head is over 1024 bytes$"):
                await client.get(server.url)
        async with httpx.AsyncClient(transport=HTTPToolsTransport(limits, max_head_bytes=4096)) as client:
            assert (await client.get(server.url)).text == "ok"  # the same head fits a larger bound


@both_transports
def test_a_huge_upstream_head_is_a_502_naming_the_fault(serve: Any, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(headers={f"X-Pad-{n}": "p" * 1000 for n in range(200)})  # 200 KB of headers
    with serve() as url, httpx.Client(base_url=url, timeout=10) as client:
        for stream in (False, True):
            response = client.post("/chat", json={"message": "hi", "stream": stream})
            assert response.status_code == 502
            error = response.json()["error"]
            assert error["code"] == "upstream_error"
            assert error["message"].startswith("ollama sent a response head too large to accept (")
        fake_ollama.script = Script()
        assert client.post("/chat", json={"message": "hi"}).json()["reply"] == "Hello, world!"


# ---------------------------------------------------------------------------------------------- abandoned


@both_transports
async def test_a_response_read_once_and_dropped_gives_its_connection_back(
    fake_ollama: FakeModel, fast_transport: bool
) -> None:
    fake_ollama.script = Script(tokens=["t"] * 100, delay=0.05)
    limits = httpx.Limits(max_connections=1)
    async with client_for(fast_transport, limits, httpx.Timeout(5.0, pool=2.0)) as client:
        request = client.build_request("POST", f"{fake_ollama.url}/api/chat", json=CHAT)
        response = await client.send(request, stream=True)
        async for _ in response.aiter_raw():
            break
        left = time.monotonic()
        del response  # never closed
        assert (await client.get(f"{fake_ollama.url}/api/version")).json() == {"version": "0.12.0"}
    assert await asyncio.to_thread(fake_ollama.wait_for_client_close, 2, left) is not None  # it stopped generating


@both_transports
async def test_a_response_never_read_and_collected_gives_its_connection_back(
    fake_ollama: FakeModel, fast_transport: bool
) -> None:
    fake_ollama.script = Script(tokens=["t"] * 100, delay=0.05)
    async with client_for(fast_transport, httpx.Limits(max_connections=1), httpx.Timeout(5.0, pool=2.0)) as client:
        response = await client.send(
            client.build_request("POST", f"{fake_ollama.url}/api/chat", json=CHAT), stream=True
        )
        del response  # neither read nor closed: the collector finds it
        gc.collect()
        assert (await client.get(f"{fake_ollama.url}/api/version")).json() == {"version": "0.12.0"}


# ---------------------------------------------------------------------------------------------- malformed


CL_AND_TE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
TE_AND_CL = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize("fast", TRANSPORTS)
@pytest.mark.parametrize("answer", [pytest.param(CL_AND_TE, id="cl-te"), pytest.param(TE_AND_CL, id="te-cl")])
async def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(
    fast: bool, answer: bytes
) -> None:
    async with answering(answer, second) as server, client_for(fast) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="Content-Length"):
            await client.get(server.url)
        assert (await client.get(server.url)).text == "second on 2"
    assert server.connections == 2


@pytest.mark.parametrize("fast", TRANSPORTS)
async def test_a_head_with_bare_line_feeds_is_read_on_both_transports(fast: bool) -> None:
    answer = b"HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 5\n\nhello"
    async with answering(answer, second) as server, client_for(fast) as client:
        response = await client.get(server.url)
        assert (response.text, response.headers["content-type"]) == ("hello", "text/plain")
        assert (await client.get(server.url)).text == "second on 1"


@pytest.mark.parametrize("fast", TRANSPORTS)
async def test_a_folded_header_is_refused_by_piagents_transport_and_unfolded_by_httpxs(fast: bool) -> None:
    answer = b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 5\r\n\r\nhello"
    async with answering(answer, second) as server, client_for(fast) as client:
        if fast:
            with pytest.raises(httpx.RemoteProtocolError, match="invalid HTTP response"):
                await client.get(server.url)
        else:
            assert (await client.get(server.url)).headers["x-a"] == "one two"
        assert (await client.get(server.url)).text.startswith("second on")


@pytest.mark.parametrize("fast", TRANSPORTS)
@pytest.mark.parametrize("later", [pytest.param(False, id="in-the-same-write"), pytest.param(True, id="while-idle")])
async def test_a_response_nobody_asked_for_is_never_handed_to_the_next_request(fast: bool, later: bool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.read_request(reader)
        stale = ok(b"stale on %d" % n) if n == 1 else b""  # the first connection answers twice
        writer.write(ok(b"first on %d" % n) + (b"" if later else stale))
        await writer.drain()
        if later:
            await asyncio.sleep(0.1)
            writer.write(stale)
        while True:
            await server.read_request(reader)
            writer.write(ok(b"answer on %d" % n))
            await writer.drain()

    server = TinyServer(handler)
    async with server, client_for(fast) as client:
        assert (await client.get(server.url)).text == "first on 1"
        if later:
            await asyncio.sleep(0.3)  # the stale answer reaches the idle connection
        assert (await client.get(server.url)).text == "first on 2"  # a new connection, never "stale on 1"
        assert (await client.get(server.url)).text == "answer on 2"
