"""JSON-RPC 2.0 and MCP wire messages as msgspec Structs, and the errors an MCP server can cause.

    PiagentError
    └── McpError .................... anything that went wrong talking to an MCP server
        ├── McpUnavailable .......... it cannot be started or reached, or it is down (waiting to restart)
        ├── McpTimeout .............. it did not answer within the call's time
        ├── McpProtocolError ........ it sent something that is not MCP (garbage, an over-long message, a wrong id)
        └── McpRemoteError .......... it answered with a JSON-RPC error (carries the code)

A tool that fails is not one of these: MCP reports it as a result with `isError: true`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from piagent.exceptions import PiagentError

# The handshake revisions piagent speaks, oldest first; the newest is offered in `initialize` and the
# server's answer is accepted when it is one of these. (2026-07-28 drops the handshake for a per-request
# envelope; servers that speak it still answer the handshake.)
PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_PROTOCOL_VERSION = PROTOCOL_VERSIONS[-1]

# JSON-RPC error codes piagent sends when it answers a server's request.
METHOD_NOT_FOUND = -32601
# The one notification piagent acts on: the server's tools changed, so they are listed again.
TOOLS_CHANGED = "notifications/tools/list_changed"


class McpError(PiagentError):
    """Talking to an MCP server failed; the message names the server and says how."""

    code = "mcp_error"
    status_code = 502


class McpUnavailable(McpError):
    """The server could not be started or reached, or died and waits for its restart."""

    code = "mcp_unavailable"
    status_code = 503


class McpTimeout(McpError):
    """The server did not answer in time."""

    code = "mcp_timeout"
    status_code = 504


class McpProtocolError(McpError):
    """The server sent something that is not an MCP message, or one too long, or for a request never sent."""

    code = "mcp_protocol_error"


class McpRemoteError(McpError):
    """The server answered a request with a JSON-RPC error."""

    code = "mcp_remote_error"

    def __init__(self, message: str, rpc_code: int) -> None:
        super().__init__(message)
        self.rpc_code = rpc_code


class Request(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A JSON-RPC request (has an id, wants a response)."""

    jsonrpc: str  # always "2.0"; required, since omit_defaults would leave a default out
    id: int | str
    method: str
    params: dict[str, Any] | None = None


class Notification(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A JSON-RPC notification (no id, no response)."""

    jsonrpc: str
    method: str
    params: dict[str, Any] | None = None


class ErrorBody(msgspec.Struct):
    """The `error` member of a JSON-RPC error response."""

    code: int
    message: str


class Response(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A JSON-RPC response piagent sends back to a server's own request (ping)."""

    jsonrpc: str
    id: int | str | None
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None


class Incoming(msgspec.Struct, kw_only=True):
    """Any message from a server: a response (id + result or error), a request or a notification (method)."""

    jsonrpc: str
    id: int | str | None = None
    method: str | None = None
    result: msgspec.Raw = msgspec.Raw()  # empty when absent
    error: ErrorBody | None = None


class ServerInfo(msgspec.Struct):
    """`serverInfo` of the initialize result."""

    name: str = ""
    version: str = ""


class InitializeResult(msgspec.Struct, rename="camel"):
    """What `initialize` answers; only the fields piagent reads."""

    protocol_version: str
    capabilities: dict[str, Any] = {}
    server_info: ServerInfo = msgspec.field(default_factory=ServerInfo)


class ListToolsResult(msgspec.Struct, rename="camel"):
    """One page of `tools/list`: each tool kept raw, so its size is checked before it is decoded."""

    tools: list[msgspec.Raw]
    next_cursor: str | None = None


class ToolDefinition(msgspec.Struct, rename="camel"):
    """One tool as a server lists it."""

    name: str
    input_schema: dict[str, Any]
    description: str | None = None


class Content(msgspec.Struct, rename="camel"):
    """One item of a tool result's `content`; the kinds that are not text are named, not carried."""

    type: str
    text: str | None = None
    mime_type: str | None = None
    uri: str | None = None
    resource: dict[str, Any] | None = None


class CallToolResult(msgspec.Struct, rename="camel"):
    """What `tools/call` answers."""

    content: list[Content] = []
    is_error: bool = False
    structured_content: Any = None


ENCODER = msgspec.json.Encoder()
INCOMING = msgspec.json.Decoder(Incoming)
INITIALIZE_RESULT = msgspec.json.Decoder(InitializeResult)
LIST_TOOLS_RESULT = msgspec.json.Decoder(ListToolsResult)
TOOL_DEFINITION = msgspec.json.Decoder(ToolDefinition)
CALL_TOOL_RESULT = msgspec.json.Decoder(CallToolResult)


def preview(data: bytes | str, limit: int = 120) -> str:
    """A short printable excerpt of what a server sent, for an error message or a log line."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return repr(shown) + (f" (+{len(text) - limit} more)" if len(text) > limit else "")


def decode_incoming(data: bytes) -> Incoming:
    """A server's message, or `McpProtocolError` saying why it is not one."""
    try:
        message = INCOMING.decode(data)
    except msgspec.DecodeError as exc:
        raise McpProtocolError(f"not a JSON-RPC message ({exc}): {preview(data)}") from exc
    if message.jsonrpc != "2.0":
        raise McpProtocolError(f"not a JSON-RPC 2.0 message: {preview(data)}")
    return message


def result_of(message: Incoming, method: str) -> bytes:
    """The raw `result` of a response to `method`, or the error it carries, raised."""
    if message.error is not None:
        raise McpRemoteError(
            f"{method} failed: {message.error.message} (JSON-RPC error {message.error.code})", message.error.code
        )
    if not message.result:
        raise McpProtocolError(f"answered {method} with neither a result nor an error")
    return bytes(message.result)


def reply_to(message: Incoming) -> bytes:
    """piagent's answer to a request the server sent: `ping` is answered, anything else is not offered."""
    if message.method == "ping":
        return ENCODER.encode(Response(jsonrpc="2.0", id=message.id, result={}))
    error = ErrorBody(METHOD_NOT_FOUND, f"piagent does not offer {message.method}")
    return ENCODER.encode(Response(jsonrpc="2.0", id=message.id, error=error))


def encode_request(request_id: int, method: str, params: dict[str, Any] | None) -> bytes:
    """A JSON-RPC request as one line of JSON (msgspec escapes every newline inside strings)."""
    return ENCODER.encode(Request(jsonrpc="2.0", id=request_id, method=method, params=params))


def encode_notification(method: str, params: dict[str, Any] | None = None) -> bytes:
    """A JSON-RPC notification as one line of JSON."""
    return ENCODER.encode(Notification(jsonrpc="2.0", method=method, params=params))
