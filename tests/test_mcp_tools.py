"""MCP tools from a real MCP server (the SDK's MCPServer), over stdio and Streamable HTTP (SSE and JSON answers)."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest
from msgspec.structs import astuple

from piagent.mcp import McpServer, ServerConfig
from piagent.tools.base import ToolLimits, ToolResult, run_tool
from piagent.transport import HTTPToolsTransport
from tests.mcp_harness import LIMITS, LoopThread, stdio_config
from tests.mcp_server import build
from tests.servers import serve_in_thread

OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> Iterator[LoopThread]:
    """piagent serves on uvloop where it is installed, whose subprocess transport is its own: both loops."""
    thread = LoopThread(use_uvloop=request.param == "uvloop")
    yield thread
    thread.close()


async def new_client(piagents_transport: bool) -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, transport=HTTPToolsTransport() if piagents_transport else None)


@pytest.fixture(scope="module", params=["stdio", "http-sse", "http-json", "http-sse-piagent-transport"])
def server(request: pytest.FixtureRequest, loop: LoopThread) -> Iterator[McpServer]:
    """One test server per transport, shared by the module's tests (starting one costs seconds).

    The last runs over piagent's own HTTP transport, which the app's shared client uses for plain http.
    """
    with ExitStack() as stack:
        if request.param == "stdio":
            config = stdio_config()
        else:
            app = build().streamable_http_app(json_response=request.param == "http-json")
            url = stack.enter_context(serve_in_thread(app))
            config = ServerConfig(name="t", url=f"{url}/mcp")
        client = loop.run(new_client(request.param.endswith("piagent-transport")))
        mcp = McpServer(config, LIMITS, client, {"PATH": os.environ["PATH"]})
        yield mcp
        loop.run(mcp.aclose())
        loop.run(client.aclose())


def test_lists_the_tools_under_names_a_model_accepts(server: McpServer, loop: LoopThread) -> None:
    tools = loop.run(server.tools())
    assert [tool.name for tool in tools] == [
        "t__add",
        "t__echo",
        "t__slow",
        "t__fails",
        "t__huge",
        "t__getenv",
        "t__pid",
        "t__crash",
    ]
    assert all(OPENAI_NAME.match(tool.name) for tool in tools)
    add = tools[0]
    assert add.description == "Add two integers."
    assert add.parameters["type"] == "object"
    assert add.parameters["properties"]["a"]["type"] == "integer"
    assert add.parameters["required"] == ["a", "b"]
    status = server.status()
    assert (status.state, status.tools, status.last_error) == ("ok", 8, "")


def test_a_call_returns_the_tools_text(server: McpServer, loop: LoopThread) -> None:
    assert loop.run(server.call("add", {"a": 2, "b": 40})) == ToolResult(True, "42")


def test_text_comes_back_unchanged_whatever_characters_it_holds(server: McpServer, loop: LoopThread) -> None:
    text = 'line one\nline two\u2028three\u0085four "quoted" \\ ünïcödé 🙂'
    assert loop.run(server.call("echo", {"text": text})) == ToolResult(True, text)


def test_a_failing_tool_is_an_error_result(server: McpServer, loop: LoopThread) -> None:
    ok, text, _ = astuple(loop.run(server.call("fails", {"reason": "the disk is on fire"})))
    assert not ok
    assert "the disk is on fire" in text


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        pytest.param("add", {"a": "not a number", "b": 1}, id="invalid-arguments"),
        pytest.param("no_such_tool", {}, id="unknown-tool"),
    ],
)
def test_a_call_the_server_rejects_is_an_error_result(
    server: McpServer, loop: LoopThread, tool: str, arguments: dict[str, object]
) -> None:
    ok, text, _ = astuple(loop.run(server.call(tool, arguments)))
    assert not ok
    assert text


def test_huge_output_is_cut_with_a_marker(server: McpServer, loop: LoopThread, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "max_output_bytes", 1000)
    result = loop.run(server.call("huge", {"size": 200_000}))
    assert result == ToolResult(True, "x" * 1000 + "\n[truncated: 199000 bytes more]", truncated=True)


def test_a_slow_call_times_out_and_the_server_keeps_working(
    server: McpServer, loop: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "timeout", 0.5)
    started = time.monotonic()
    assert loop.run(server.call("slow", {"seconds": 30})) == ToolResult(
        False,
        "mcp server 't': did not answer tools/call within 0.5 s",
    )
    assert time.monotonic() - started < 3
    assert loop.run(server.call("add", {"a": 1, "b": 2})) == ToolResult(True, "3")
    assert server.status().state == "ok"


def test_concurrent_calls_each_get_their_own_answer(server: McpServer, loop: LoopThread) -> None:
    async def many() -> list[ToolResult]:
        return await asyncio.gather(*(server.call("echo", {"text": f"call {n}"}) for n in range(12)))

    assert loop.run(many()) == [ToolResult(True, f"call {n}") for n in range(12)]


def test_a_cancelled_call_raises_cancellation_and_the_server_keeps_working(server: McpServer, loop: LoopThread) -> None:
    async def cancel_midway() -> ToolResult:
        call = asyncio.create_task(server.call("slow", {"seconds": 30}))
        await asyncio.sleep(0.3)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return await server.call("add", {"a": 1, "b": 1})

    started = time.monotonic()
    assert loop.run(cancel_midway()) == ToolResult(True, "2")
    assert time.monotonic() - started < 5


def test_an_mcp_tool_runs_under_the_tool_runners_checks_and_limits(server: McpServer, loop: LoopThread) -> None:
    async def through_the_runner() -> list[ToolResult]:
        tools = {tool.name: tool for tool in await server.tools()}
        limits = ToolLimits(timeout=0.3, output_max_bytes=100)
        return [
            await run_tool(tools["t__add"], '{"a": 2, "b": 3}', limits),
            await run_tool(tools["t__add"], '{"a": "two", "b": 3}', limits),
            await run_tool(tools["t__slow"], {"seconds": 30}, limits),
            await run_tool(tools["t__huge"], {"size": 1000}, limits),
            await run_tool(tools["t__echo"], {"text": "still here"}, limits),
        ]

    assert loop.run(through_the_runner()) == [
        ToolResult(True, "5"),
        ToolResult(False, "invalid arguments for t__add: $.a: expected an integer"),
        ToolResult(False, "t__slow timed out after 0.3 s"),
        ToolResult(True, "x" * 100 + "\n[truncated: 900 bytes more]", truncated=True),
        ToolResult(True, "still here"),
    ]
