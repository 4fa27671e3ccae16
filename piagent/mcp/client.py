"""An MCP client session over any transport: the handshake, `tools/list` page by page, `tools/call`."""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

import msgspec

from piagent.mcp.messages import (
    CALL_TOOL_RESULT,
    ENCODER,
    INITIALIZE_RESULT,
    LATEST_PROTOCOL_VERSION,
    LIST_TOOLS_RESULT,
    PROTOCOL_VERSIONS,
    TOOL_DEFINITION,
    CallToolResult,
    Content,
    McpProtocolError,
    ToolDefinition,
)
from piagent.tools.base import ToolResult, truncate_utf8
from piagent.version import __version__

logger = logging.getLogger("piagent.mcp")

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_NAME = 64  # what OpenAI's function names allow (^[a-zA-Z0-9_-]{1,64}$)


class Channel(Protocol):
    """A transport to one MCP server: requests answered by id, notifications, and a way to end it."""

    tools_changed: bool  # set when the server sends notifications/tools/list_changed

    @property
    def broken(self) -> str | None:
        """Why the channel can no longer be used, or None while it can."""

    async def start(self) -> None:
        """Open it (start the process); the handshake comes after."""

    def negotiated(self, version: str) -> None:
        """Told the protocol version the handshake settled on."""

    async def request(self, method: str, params: dict[str, Any] | None, seconds: float) -> bytes:
        """Send a request; the raw `result` of its response, or an `McpError`."""

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification."""

    async def aclose(self) -> None:
        """End it; never raises."""


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes, method: str) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise McpProtocolError(f"answered {method} with a result that does not fit MCP: {exc}") from exc


def exposed_name(server: str, tool: str) -> str:
    """The name a model sees: `<server>__<tool>`, characters outside [A-Za-z0-9_-] replaced by `_`."""
    return f"{server}__{_NAME_UNSAFE.sub('_', tool)}"


class Session:
    """An initialized MCP session: what the server said about itself, its tools, and calls to them."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.protocol_version = ""
        self.server_name = ""

    async def initialize(self, seconds: float) -> None:
        """The handshake: offer the newest protocol version, accept the server's if piagent speaks it."""
        params = {
            "protocolVersion": LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "piagent", "version": __version__},
        }
        result = _decode(INITIALIZE_RESULT, await self.channel.request("initialize", params, seconds), "initialize")
        if result.protocol_version not in PROTOCOL_VERSIONS:
            raise McpProtocolError(
                f"speaks protocol version {result.protocol_version!r}; piagent speaks {', '.join(PROTOCOL_VERSIONS)}"
            )
        self.protocol_version = result.protocol_version
        self.server_name = result.server_info.name
        self.channel.negotiated(result.protocol_version)
        await self.channel.notify("notifications/initialized")

    async def list_tools(self, seconds: float, max_tools: int, max_tool_bytes: int) -> list[ToolDefinition]:
        """Every tool, page by page, at most `max_tools`; a definition over `max_tool_bytes` is left out."""
        tools: list[ToolDefinition] = []
        names: set[str] = set()
        cursor: str | None = None
        # A server that pages forever (or repeats a cursor) is stopped by the page count.
        for _ in range(max_tools + 1):
            params = None if cursor is None else {"cursor": cursor}
            page = _decode(LIST_TOOLS_RESULT, await self.channel.request("tools/list", params, seconds), "tools/list")
            for raw in page.tools:
                if len(tools) == max_tools:
                    logger.warning(
                        "mcp server lists more than %d tools (PIAGENT_MCP_MAX_TOOLS); the rest are left out", max_tools
                    )
                    return tools
                if len(raw) > max_tool_bytes:
                    logger.warning(
                        "mcp tool definition over %d bytes (PIAGENT_MCP_MAX_TOOL_BYTES) left out", max_tool_bytes
                    )
                    continue
                tool = _decode(TOOL_DEFINITION, bytes(raw), "tools/list")
                if tool.name in names:
                    raise McpProtocolError(f"listed the tool {tool.name!r} twice")
                names.add(tool.name)
                tools.append(tool)
            if not page.next_cursor or page.next_cursor == cursor:
                break
            cursor = page.next_cursor
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any], seconds: float) -> CallToolResult:
        """Run a tool; a tool's own failure is a result with `is_error`, not an exception."""
        params = {"name": name, "arguments": arguments}
        result: CallToolResult = _decode(
            CALL_TOOL_RESULT, await self.channel.request("tools/call", params, seconds), "tools/call"
        )
        return result


def _content_text(item: Content) -> str:
    if item.type == "text" and item.text is not None:
        return item.text
    if item.type == "resource" and item.resource is not None:
        text = item.resource.get("text")
        return text if isinstance(text, str) else f"[resource {item.resource.get('uri', '')}]"
    if item.type == "resource_link":
        return f"[resource link {item.uri or ''}]"
    # Images and audio are not text a model can read here: say what came instead of dropping it silently.
    return f"[{item.type} content{' (' + item.mime_type + ')' if item.mime_type else ''}]"


def render_result(result: CallToolResult, max_bytes: int) -> ToolResult:
    """A tool result as the model gets it: its text, cut at `max_bytes` of UTF-8 with the tools' marker."""
    if result.content:
        text = "\n".join(_content_text(item) for item in result.content)
    elif result.structured_content is not None:
        text = ENCODER.encode(result.structured_content).decode("utf-8")
    else:
        text = ""
    text, truncated = truncate_utf8(text, max_bytes)
    return ToolResult(not result.is_error, text, truncated)
