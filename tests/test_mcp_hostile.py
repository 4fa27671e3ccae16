"""MCP servers that break the protocol get clear errors with bounded cost, over stdio and over HTTP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from msgspec.structs import astuple
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from piagent.mcp import McpLimits, McpServer, McpServers, ServerConfig
from piagent.tools.base import ToolResult
from tests.mcp_harness import BOTH_LOOPS, fake_config
from tests.servers import serve_in_thread

pytestmark = [pytest.mark.anyio, BOTH_LOOPS]
ENVIRON = {"PATH": os.environ["PATH"]}
LIMITS = McpLimits(timeout=5, start_timeout=10, max_message_bytes=4096, restart_min=30, restart_max=30)


async def call(config: ServerConfig, limits: McpLimits = LIMITS, tool: str = "go") -> tuple[bool, str, McpServer]:
    async with httpx.AsyncClient(trust_env=False) as client:
        server = McpServer(config, limits, client, ENVIRON)
        try:
            result = await server.call(tool, {})
        finally:
            await server.aclose()
    return result.ok, result.text, server


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        pytest.param("garbage", "broke the protocol: not a JSON-RPC message (JSON is malformed: ", id="garbage-line"),
        pytest.param("long", "broke the protocol: sent a message over 4096 bytes", id="over-long-line"),
        pytest.param(
            "wrong-id", "broke the protocol: answered request id 999, which piagent never sent", id="wrong-id"
        ),
    ],
)
async def test_a_stdio_server_that_breaks_the_protocol_fails_the_call_and_is_restarted(mode: str, error: str) -> None:
    server = McpServer(fake_config(mode), LIMITS, None, ENVIRON)
    try:
        await server.tools()
        pid = server.pid
        ok, text, _ = astuple(await server.call("go", {}))
        assert not ok
        assert text.startswith(f"mcp server 'bad': {error}"), text
        status = server.status()
        assert (status.state, status.last_error) == ("backoff", text.removeprefix("mcp server 'bad': "))
        assert pid is not None
    finally:
        await server.aclose()


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        pytest.param(
            "version",
            "speaks protocol version '1999-01-01'; piagent speaks 2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25",
            id="unknown-protocol-version",
        ),
        pytest.param("silent", "did not finish starting within 0.5 s", id="no-answer-to-initialize"),
        pytest.param(
            "bad-schema", "answered tools/list with a result that does not fit MCP: Expected `object`", id="bad-schema"
        ),
    ],
)
async def test_a_server_that_cannot_complete_the_handshake_is_down_with_the_reason(mode: str, error: str) -> None:
    limits = msgspec.structs.replace(LIMITS, start_timeout=0.5 if mode == "silent" else 10)
    ok, text, server = await call(fake_config(mode), limits)
    assert not ok
    assert text.startswith(f"mcp server 'bad': {error}"), text
    assert server.status().last_error.startswith(error)


async def test_a_late_answer_to_a_call_given_up_on_is_ignored() -> None:
    server = McpServer(fake_config("hang"), msgspec.structs.replace(LIMITS, timeout=0.2), None, ENVIRON)
    try:
        assert await server.call("go", {}) == ToolResult(
            False, "mcp server 'bad': did not answer tools/call within 0.2 s"
        )
        assert server.status().state == "ok"
    finally:
        await server.aclose()


async def test_a_stdio_server_whose_tools_changed_has_them_listed_again() -> None:
    server = McpServer(fake_config("grow"), LIMITS, None, ENVIRON)
    try:
        assert [tool.name for tool in await server.tools()] == ["bad__go"]
        assert await server.call("go", {}) == ToolResult(True, "ok")
        assert [tool.name for tool in await server.tools()] == ["bad__go", "bad__extra"]
    finally:
        await server.aclose()


async def test_tools_are_read_page_by_page_and_a_repeated_cursor_ends_the_list() -> None:
    server = McpServer(fake_config("pages"), LIMITS, None, ENVIRON)
    try:
        assert [tool.name for tool in await server.tools()] == [f"bad__t{n}" for n in range(8)]
    finally:
        await server.aclose()


async def test_tools_past_the_limit_are_left_out() -> None:
    server = McpServer(fake_config("pages"), msgspec.structs.replace(LIMITS, max_tools=3), None, ENVIRON)
    try:
        assert [tool.name for tool in await server.tools()] == ["bad__t0", "bad__t1", "bad__t2"]
    finally:
        await server.aclose()


async def test_an_oversized_tool_is_left_out_and_odd_names_are_made_safe() -> None:
    server = McpServer(
        fake_config("oversize-tool"),
        msgspec.structs.replace(LIMITS, max_tool_bytes=1024, max_message_bytes=65536),
        None,
        ENVIRON,
    )
    try:
        tools = await server.tools()
        assert [(tool.name, tool.remote_name) for tool in tools] == [
            ("bad__go", "go"),
            ("bad__dotted_name_x", "dotted.name/x"),
        ]
        assert await tools[1].run({}) == ToolResult(True, "ok")
    finally:
        await server.aclose()


async def test_the_servers_own_requests_are_answered_ping_yes_anything_else_no() -> None:
    ok, text, _ = await call(fake_config("ping"))
    assert (ok, text) == (
        True,
        "pong: {}; sampling: {'code': -32601, 'message': 'piagent does not offer sampling/createMessage'}",
    )


class FakeHttpServer:
    """A Streamable HTTP endpoint that does the handshake properly, then answers `tools/call` as `mode` says."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sessions = 0
        self.deleted: list[str] = []
        self.replies: list[dict[str, Any]] = []
        self.grown = False  # mode grow: a call adds a tool and says so
        self.app = Starlette(routes=[Route("/mcp", self.endpoint, methods=["POST", "DELETE"])])

    async def endpoint(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.deleted.append(request.headers.get("mcp-session-id", ""))
            return Response(status_code=204)
        message: dict[str, Any] = msgspec.json.decode(await request.body())
        method, request_id = message.get("method"), message.get("id")
        if method is None:
            self.replies.append(message)  # the client's answer to a request of the server's own
            return Response(status_code=202)
        if request_id is None:
            return Response(status_code=202)
        if method == "initialize":
            self.sessions += 1
            result = {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "fake"}}
            return self.json(
                {"jsonrpc": "2.0", "id": request_id, "result": result}, {"mcp-session-id": f"s{self.sessions}"}
            )
        if method == "tools/list":
            names = ["go", "extra"] if self.grown else ["go"]
            tools = [{"name": name, "inputSchema": {"type": "object"}} for name in names]
            return self.json({"jsonrpc": "2.0", "id": request_id, "result": {"tools": tools}})
        answer = {"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": "ok"}]}}
        if self.mode == "expire" and request.headers.get("mcp-session-id") == "s1":
            return Response(status_code=404)
        if self.mode == "garbage":
            return Response(b"<html>not json</html>", media_type="application/json")
        if self.mode == "html":
            return Response(b"<html>hello</html>", media_type="text/html")
        if self.mode == "huge":
            return Response(b'{"jsonrpc": "2.0", "result": "' + b"x" * 10_000 + b'"}', media_type="application/json")
        if self.mode == "wrong-id":
            return self.json({**answer, "id": 999})
        if self.mode == "error-500":
            error = {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32603, "message": "database melted"}}
            return self.json(error, status=500)
        if self.mode == "sse-no-answer":
            body = b'event: message\ndata: {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}\n\n'
            return Response(body, media_type="text/event-stream")
        if self.mode == "grow":
            self.grown = True
            changed = b'data: {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}\n\n'
            return Response(changed + b"data: " + msgspec.json.encode(answer) + b"\n\n", media_type="text/event-stream")
        if self.mode == "sse-ping":
            ping = b'data: {"jsonrpc": "2.0", "id": "p1", "method": "ping"}\n\n'
            answer["result"] = {"content": [{"type": "text", "text": "after ping"}]}
            return Response(ping + b"data: " + msgspec.json.encode(answer) + b"\n\n", media_type="text/event-stream")
        if self.mode == "sse-split":
            # An answer spread over two data lines, after a comment and a notification.
            first = b'data: {"jsonrpc": "2.0", "id": ' + str(request_id).encode() + b","
            second = b'data: "result": {"content": [{"type": "text", "text": "split"}]}}'
            body = b': hi\n\ndata: {"jsonrpc": "2.0", "method": "x"}\n\n' + first + b"\n" + second + b"\n\n"
            return Response(body, media_type="text/event-stream")
        return self.json(answer)

    @staticmethod
    def json(body: dict[str, Any], headers: dict[str, str] | None = None, status: int = 200) -> Response:
        return Response(msgspec.json.encode(body), status_code=status, headers=headers, media_type="application/json")


@pytest.fixture
def http_server(request: pytest.FixtureRequest) -> Iterator[tuple[FakeHttpServer, str]]:
    fake = FakeHttpServer(request.param)
    with serve_in_thread(fake.app) as url:
        yield fake, f"{url}/mcp"


@pytest.mark.parametrize(
    ("http_server", "answer"),
    [
        pytest.param("garbage", (False, "mcp server 'web': not a JSON-RPC message (JSON is malformed: "), id="garbage"),
        pytest.param(
            "html",
            (False, "mcp server 'web': answered tools/call with HTTP 200 and content type 'text/html'"),
            id="html",
        ),
        pytest.param("huge", (False, "mcp server 'web': sent a response over 4096 bytes"), id="huge"),
        pytest.param("wrong-id", (False, "mcp server 'web': answered request id 999 to request id 3"), id="wrong-id"),
        pytest.param(
            "error-500",
            (False, "mcp server 'web': tools/call failed: database melted (JSON-RPC error -32603)"),
            id="error-500",
        ),
        pytest.param(
            "sse-no-answer",
            (False, "mcp server 'web': ended the event stream without answering tools/call"),
            id="sse-no-answer",
        ),
        pytest.param("sse-split", (True, "split"), id="sse-answer-over-two-data-lines"),
    ],
    indirect=["http_server"],
)
async def test_an_http_server_that_breaks_the_protocol_gets_a_clear_error(
    http_server: tuple[FakeHttpServer, str], answer: tuple[bool, str]
) -> None:
    _, url = http_server
    ok, text, _ = await call(ServerConfig(name="web", url=url))
    assert ok == answer[0]
    assert text.startswith(answer[1]), text


@pytest.mark.parametrize("http_server", ["expire"], indirect=True)
async def test_a_forgotten_http_session_is_started_again_once(http_server: tuple[FakeHttpServer, str]) -> None:
    fake, url = http_server
    ok, text, _ = await call(ServerConfig(name="web", url=url))
    assert (ok, text) == (True, "ok")
    assert fake.sessions == 2
    assert fake.deleted == ["s2"]


async def test_an_http_server_that_goes_away_is_down_and_its_wait_reported() -> None:
    fake = FakeHttpServer("ok")
    async with httpx.AsyncClient(trust_env=False) as client:
        with serve_in_thread(fake.app) as url:
            server = McpServer(ServerConfig(name="web", url=f"{url}/mcp"), LIMITS, client, ENVIRON)
            assert await server.call("go", {}) == ToolResult(True, "ok")
        result = await server.call("go", {})
        assert not result.ok
        assert result.text.startswith(f"mcp server 'web': cannot be reached at {url}/mcp: ConnectError")
        status = server.status()
        assert (status.state, status.last_error) == ("down", result.text.removeprefix("mcp server 'web': "))
        assert 0 < status.retry_in <= LIMITS.restart_min
        await server.aclose()


@pytest.mark.parametrize("http_server", ["sse-ping"], indirect=True)
async def test_an_http_servers_ping_inside_the_event_stream_is_answered(
    http_server: tuple[FakeHttpServer, str],
) -> None:
    fake, url = http_server
    ok, text, _ = await call(ServerConfig(name="web", url=url))
    assert (ok, text) == (True, "after ping")
    assert fake.replies == [{"jsonrpc": "2.0", "id": "p1", "result": {}}]


async def test_one_broken_server_leaves_the_others_tools_available() -> None:
    servers = McpServers(
        [fake_config("ok", name="good"), ServerConfig(name="gone", command=["no-such-mcp-server"])],
        LIMITS,
        None,
        ENVIRON,
    )
    try:
        assert [tool.name for tool in await servers.tools()] == ["good__go"]
        assert [(status.name, status.state) for status in await servers.check()] == [("good", "ok"), ("gone", "down")]
    finally:
        await servers.aclose()


@pytest.mark.parametrize("http_server", ["grow"], indirect=True)
async def test_a_server_whose_tools_changed_has_them_listed_again(http_server: tuple[FakeHttpServer, str]) -> None:
    _, url = http_server
    async with httpx.AsyncClient(trust_env=False) as client:
        server = McpServer(ServerConfig(name="web", url=url), LIMITS, client, ENVIRON)
        try:
            assert [tool.name for tool in await server.tools()] == ["web__go"]
            assert await server.call("go", {}) == ToolResult(True, "ok")
            assert [tool.name for tool in await server.tools()] == ["web__go", "web__extra"]
            assert server.status().tools == 2
        finally:
            await server.aclose()
