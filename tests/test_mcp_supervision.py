"""Supervision of stdio MCP servers: started lazily, restarted with back-off when they die, ended with aclose."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import msgspec
import pytest
from msgspec.structs import astuple

from piagent.mcp import McpLimits, McpServer, McpServers, ServerConfig
from piagent.tools.base import ToolResult
from tests.mcp_harness import BOTH_LOOPS, LIMITS, TESTS, alive, fake_config, process_group, stdio_config

pytestmark = [pytest.mark.anyio, BOTH_LOOPS]
ENVIRON = {"PATH": os.environ["PATH"]}


async def wait_for_state(server: McpServer, state: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while server.status().state != state:
        assert time.monotonic() < deadline, f"still {server.status()}"
        await asyncio.sleep(0.02)


async def test_nothing_starts_until_a_tool_is_asked_for() -> None:
    servers = McpServers([fake_config("ok", name="lazy")], LIMITS, None, ENVIRON)
    server = servers.servers["lazy"]
    try:
        assert [status.state for status in servers.status()] == ["idle"]
        assert server.pid is None
        assert [tool.name for tool in await servers.tools()] == ["lazy__go"]
        assert server.pid is not None
        assert alive(server.pid)
        assert [status.state for status in servers.status()] == ["ok"]
    finally:
        await servers.aclose()


async def test_aclose_ends_the_server_and_everything_it_started() -> None:
    # The server leaves a grandchild behind (a background sleep): the whole process group goes.
    script = f"sleep 300 & exec {sys.executable} {TESTS / 'mcp_fake.py'} ok"
    servers = McpServers([ServerConfig(name="group", command=["sh", "-c", script])], LIMITS, None, ENVIRON)
    await servers.tools()
    pgid = servers.servers["group"].pid
    assert pgid is not None
    assert len(process_group(pgid)) == 2
    started = time.monotonic()
    await servers.aclose()
    # SIGKILL is delivered asynchronously: the group is given a moment to be gone from /proc.
    for _ in range(300):
        if not process_group(pgid):
            break
        await asyncio.sleep(0.01)
    assert process_group(pgid) == []
    assert time.monotonic() - started < 3
    assert [status.state for status in servers.status()] == ["closed"]
    assert await servers.servers["group"].call("go", {}) == ToolResult(False, "mcp server 'group': is shut down")


async def test_a_killed_server_is_restarted_with_back_off_and_reported() -> None:
    # A first wait of a second: long enough to see the back-off on a busy machine, short for a test.
    limits = msgspec.structs.replace(LIMITS, restart_min=1.0, restart_max=2.0)
    server = McpServer(stdio_config(), limits, None, ENVIRON)
    try:
        await server.tools()
        first = server.pid
        assert first is not None
        call = asyncio.create_task(server.call("slow", {"seconds": 30}))
        await asyncio.sleep(0.2)
        os.kill(first, signal.SIGKILL)
        ok, text, _ = astuple(await asyncio.wait_for(call, 5))
        assert not ok
        assert text.startswith("mcp server 't': exited with status -9")
        status = server.status()
        assert status.state == "backoff"
        assert status.last_error.startswith("exited with status -9")
        assert status.restarts == 0
        assert 0 < status.retry_in <= 1.0
        await wait_for_state(server, "ok")
        assert server.status().restarts == 1
        assert server.pid not in (None, first)
        assert not alive(first)
        assert await server.call("add", {"a": 20, "b": 22}) == ToolResult(True, "42")
    finally:
        await server.aclose()


async def test_a_server_that_crashes_on_a_call_comes_back() -> None:
    server = McpServer(fake_config("crash"), LIMITS, None, ENVIRON)
    try:
        await server.tools()
        first = server.pid
        assert await server.call("go", {}) == ToolResult(False, "mcp server 'bad': exited with status 3")
        await wait_for_state(server, "ok")
        assert server.pid not in (None, first)
        assert server.status().restarts == 1
    finally:
        await server.aclose()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_server_that_cannot_start_is_tried_again_after_waits_that_double_up_to_the_cap() -> None:
    clock = Clock()
    limits = McpLimits(start_timeout=10, restart_min=1, restart_max=4)
    config = ServerConfig(
        name="broken", command=[sys.executable, "-c", "import sys; print('no', file=sys.stderr); sys.exit(2)"]
    )
    server = McpServer(config, limits, None, ENVIRON, clock=clock)
    ok, text, _ = astuple(await server.call("go", {}))
    assert not ok
    assert text.startswith("mcp server 'broken': exited with status 2; its last stderr line: 'no'")
    waits = []
    for _ in range(4):
        status = server.status()
        assert status.state == "down"
        waits.append(status.retry_in)
        # Before the wait is over, nothing is started: the answer comes at once.
        assert (await server.call("go", {})).text.startswith("mcp server 'broken': is down (exited with status 2")
        clock.now += status.retry_in
        assert not (await server.call("go", {})).ok
    assert waits == [1, 2, 4, 4]


async def test_a_command_that_does_not_exist_is_a_clear_error() -> None:
    server = McpServer(ServerConfig(name="nope", command=["no-such-mcp-server"]), LIMITS, None, ENVIRON)
    assert await server.call("go", {}) == ToolResult(
        False,
        "mcp server 'nope': could not start 'no-such-mcp-server': No such file or directory",
    )
    assert server.status().state == "down"


async def test_the_server_gets_only_the_environment_the_owner_allows() -> None:
    environ = {**ENVIRON, "HOME": "/home/pi", "PIAGENT_API_KEYS": "secret-key-1234567890", "ALLOWED": "yes"}
    config = msgspec.structs.replace(fake_config("env"), env=["ALLOWED"], set_env={"FIXED": "set by the owner"})
    server = McpServer(config, LIMITS, None, environ)
    try:
        ok, text, _ = astuple(await server.call("go", {}))
    finally:
        await server.aclose()
    assert ok
    seen = json.loads(text)
    # Python adds LC_CTYPE on its own when the locale is not set.
    seen.pop("LC_CTYPE", None)
    assert seen == {"PATH": os.environ["PATH"], "HOME": "/home/pi", "ALLOWED": "yes", "FIXED": "set by the owner"}


async def test_aclose_while_waiting_to_restart_stops_the_restart() -> None:
    server = McpServer(fake_config("ok"), McpLimits(restart_min=5, restart_max=5), None, ENVIRON)
    await server.tools()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await wait_for_state(server, "backoff")
    await server.aclose()
    assert server.status().state == "closed"
    assert server.pid is None


async def test_a_cancelled_call_is_cancelled_and_the_server_told() -> None:
    server = McpServer(fake_config("hang"), LIMITS, None, ENVIRON)
    try:
        await server.tools()
        call = asyncio.create_task(server.call("go", {}))
        await asyncio.sleep(0.1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # Requests 1 and 2 were the handshake and the tool list; 3 was the call.
        assert await server.call("cancelled", {}) == ToolResult(True, "[3]")
    finally:
        await server.aclose()


async def test_a_server_that_stayed_up_long_enough_is_restarted_after_the_shortest_wait_again() -> None:
    clock = Clock()
    limits = McpLimits(restart_min=0.05, restart_max=0.4)
    server = McpServer(fake_config("crash"), limits, None, ENVIRON, clock=clock)
    try:
        waits = []
        for up_for in (0, 0, 0.5):
            await wait_for_state(server, "ok") if server.status().state != "idle" else await server.tools()
            clock.now += up_for
            await server.call("go", {})
            waits.append(server.status().retry_in)
            clock.now += server.status().retry_in
        # Two quick deaths double the wait; one after more than 0.4 s up (the cap) starts afresh.
        assert waits == [0.05, 0.1, 0.05]
    finally:
        await server.aclose()
