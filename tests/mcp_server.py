"""A real MCP server for the tests, built with the `mcp` SDK's MCPServer (FastMCP before mcp 2).

`python tests/mcp_server.py` serves it over stdio; `build()` gives the server for the Streamable HTTP
tests, which run its `streamable_http_app()` under uvicorn.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError


def build() -> MCPServer:
    """The test server: add, echo, slow, fails, huge, getenv, pid and crash."""
    server = MCPServer("piagent-test")

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Say the text back.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Sleep, then answer.")
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "woke up"

    @server.tool(description="Always fails.")
    def fails(reason: str = "broken on purpose") -> str:
        raise ToolError(reason)

    @server.tool(description="Answer with many bytes.")
    def huge(size: int) -> str:
        return "x" * size

    @server.tool(description="The value of an environment variable, or <unset>.")
    def getenv(name: str) -> str:
        return os.environ.get(name, "<unset>")

    @server.tool(description="The server's process id.")
    def pid() -> int:
        return os.getpid()

    @server.tool(description="Exit the server process at once, without answering.")
    def crash() -> str:
        sys.stdout.flush()
        os._exit(3)

    return server


if __name__ == "__main__":
    print("mcp test server starting", file=sys.stderr, flush=True)
    build().run()
