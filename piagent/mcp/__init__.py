"""MCP servers as tool sources: a JSON-RPC client over stdio and Streamable HTTP, and their supervision.

Imported only when PIAGENT_MCP_FILE names a file, so piagent without MCP servers pays nothing for it.
"""

from __future__ import annotations

from piagent.mcp.config import McpLimits, ServerConfig, load_servers, parse_servers
from piagent.mcp.messages import (
    McpError,
    McpProtocolError,
    McpRemoteError,
    McpTimeout,
    McpUnavailable,
)
from piagent.mcp.servers import McpServer, McpServers, McpTool, ServerStatus

__all__ = [
    "McpError",
    "McpLimits",
    "McpProtocolError",
    "McpRemoteError",
    "McpServer",
    "McpServers",
    "McpTimeout",
    "McpTool",
    "McpUnavailable",
    "ServerConfig",
    "ServerStatus",
    "load_servers",
    "parse_servers",
]
