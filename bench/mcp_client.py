"""The cost of one MCP tool call on the client side: piagent's msgspec client against the `mcp` SDK's, in one run.

Both talk over stdio to the same real server (tests/mcp_server.py, the SDK's MCPServer) and call `add`
N times in turn; the figure that matters is the client process's own CPU per call (the server runs in
its own process, so its work is not counted), with wall time beside it. Needs requirements-dev.txt.

    .venv/bin/python bench/mcp_client.py [calls]
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = [sys.executable, str(ROOT / "tests" / "mcp_server.py")]
ERRLOG = open(os.devnull, "w")  # noqa: SIM115 - the SDK's server log, dropped for the whole run


async def piagent_calls(calls: int) -> tuple[float, float]:
    from piagent.mcp import McpLimits, McpServer, ServerConfig

    server = McpServer(ServerConfig(name="b", command=SERVER), McpLimits(start_timeout=60), None, os.environ)
    try:
        await server.tools()
        cpu, wall = time.process_time(), time.perf_counter()
        for n in range(calls):
            result = await server.call("add", {"a": n, "b": 1})
            assert result.text == str(n + 1), result
        return time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await server.aclose()


async def sdk_calls(calls: int) -> tuple[float, float]:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(command=SERVER[0], args=SERVER[1:])
    async with stdio_client(params, errlog=ERRLOG) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.list_tools()
        cpu, wall = time.process_time(), time.perf_counter()
        for n in range(calls):
            result = await session.call_tool("add", {"a": n, "b": 1})
            assert not result.is_error
        return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    import piagent.http.app  # noqa: F401 - piagent's server is loaded already when MCP is used: not counted

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mine = asyncio.run(piagent_calls(calls))
    rss_mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sdk = asyncio.run(sdk_calls(calls))
    rss_sdk = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{calls} calls of `add` over stdio, client side only")
    print("client      CPU/call   wall/call   peak RSS added")
    for name, (cpu, wall), rss in (("piagent", mine, rss_mine - rss_before), ("mcp SDK", sdk, rss_sdk - rss_mine)):
        print(f"{name}   {cpu / calls * 1e6:7.0f} us {wall / calls * 1e3:8.2f} ms   {rss / 1024:6.1f} MiB")
    print(f"SDK/piagent CPU per call: {sdk[0] / mine[0]:.1f}x")


if __name__ == "__main__":
    main()
