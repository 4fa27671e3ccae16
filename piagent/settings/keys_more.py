"""The keys of MCP servers, browsers, the chat page, logging, and the agents' tools."""

from __future__ import annotations

from piagent.settings.key import _Key
from piagent.settings.parsers import (
    _LOG_LEVELS,
    _boolean,
    _choice,
    _host_names,
    _integer,
    _items,
    _origins,
    _seconds,
    _text,
    _url_prefixes,
)

KEYS: tuple[_Key, ...] = (
    _Key(
        "PIAGENT_MCP_FILE",
        "mcp_file",
        _text,
        "A TOML file listing MCP servers whose tools agents may use (see 'MCP servers'); empty: none.",
    ),
    _Key(
        "PIAGENT_MCP_TIMEOUT",
        "mcp_timeout",
        _seconds(0.01, 86_400),
        "Seconds one MCP tool call may take; a server's own `timeout` wins.",
    ),
    _Key(
        "PIAGENT_MCP_START_TIMEOUT",
        "mcp_start_timeout",
        _seconds(0.01, 86_400),
        "Seconds an MCP server gets to start: its process launched (or URL reached), the handshake, its tool list.",
    ),
    _Key(
        "PIAGENT_MCP_MAX_OUTPUT_BYTES",
        "mcp_max_output_bytes",
        _integer(1, 256 * 1024 * 1024),
        "Bytes of one MCP tool result given to the model; more is cut with a marker. A server may set its own.",
    ),
    _Key(
        "PIAGENT_MCP_MAX_MESSAGE_BYTES",
        "mcp_max_message_bytes",
        _integer(1024, 256 * 1024 * 1024),
        "Largest single message accepted from an MCP server; a larger one is a protocol error.",
    ),
    _Key(
        "PIAGENT_MCP_MAX_TOOLS",
        "mcp_max_tools",
        _integer(1, 10_000),
        "Tools taken from one MCP server at most; the rest are left out.",
    ),
    _Key(
        "PIAGENT_MCP_MAX_TOOL_BYTES",
        "mcp_max_tool_bytes",
        _integer(64, 16 * 1024 * 1024),
        "Largest tool definition (description and schemas as JSON) taken from an MCP server; larger ones are left out.",
    ),
    _Key(
        "PIAGENT_MCP_RESTART_MAX",
        "mcp_restart_max",
        _seconds(0.01, 86_400),
        "Longest wait before a stdio MCP server that died is restarted; the wait doubles from 1 s up to it.",
    ),
    _Key(
        "PIAGENT_CORS_ORIGINS",
        "cors_origins",
        _origins,
        "Comma-separated origins of other sites' pages allowed to call the API (others get 403); empty: CORS off.",
    ),
    _Key(
        "PIAGENT_ALLOWED_HOSTS",
        "allowed_hosts",
        _host_names,
        "Host names piagent answers to besides `localhost` and IP addresses (e.g. `raspberrypi.local`; "
        "`*.home.arpa` for subdomains; `*`: any); others get 403 (DNS rebinding defence).",
    ),
    _Key(
        "PIAGENT_DEEP_HEALTH_CACHE",
        "deep_health_cache",
        _seconds(0, 3600),
        "Seconds a `/health?deep=1` result is reused (callers meanwhile share one check), so no caller can "
        "make piagent ask every upstream without bound; 0: each call checks (concurrent ones still share).",
    ),
    _Key(
        "PIAGENT_CHAT_PAGE",
        "chat_page",
        _boolean,
        "Serve the built-in chat page at `GET /`; false: `/` answers 404.",
    ),
    _Key("PIAGENT_LOG_LEVEL", "log_level", _choice(*_LOG_LEVELS), "Log level."),
    _Key(
        "PIAGENT_METRICS",
        "metrics",
        _boolean,
        "Serve `/metrics` in Prometheus' text format (behind the API keys); needs `pip install 'piagent[metrics]'`.",
    ),
    _Key(
        "PIAGENT_LOG_FORMAT",
        "log_format",
        _choice("text", "json"),
        "`text` (uvicorn's lines) or `json`: one JSON object per line, the access line with its request id.",
    ),
    _Key("PIAGENT_ACCESS_LOG", "access_log", _boolean, "One log line per request (never its content)."),
    _Key(
        "PIAGENT_STARTUP_CHECK",
        "startup_check",
        _boolean,
        "Once serving, check the model servers as `piagent check` does and log each problem as a warning.",
    ),
    _Key(
        "PIAGENT_LOG_CONTENT",
        "log_content",
        _boolean,
        "Debug only: also log message and reply text at debug level.",
    ),
    # Tools agents may call (docs/tools.md); each built-in is off until an agent lists it.
    _Key("PIAGENT_TOOLS_FILE", "tools_file", _text, "A TOML file of command tools (see docs/tools.md); empty: none."),
    _Key(
        "PIAGENT_TOOL_TIMEOUT",
        "tool_timeout",
        _seconds(0.01, 3600),
        "Seconds one tool call may take; a command tool's own `timeout` may only shorten it.",
    ),
    _Key(
        "PIAGENT_TOOL_OUTPUT_MAX_BYTES",
        "tool_output_max_bytes",
        _integer(256, 16 * 1024 * 1024),
        "Bytes of one tool result given to the model; the rest is cut with a `[truncated: N bytes more]` marker.",
    ),
    _Key(
        "PIAGENT_TOOL_MAX_STEPS",
        "tool_max_steps",
        _integer(1, 50),
        "Model calls of one reply that may ask for tools; the next answers without them. Agents may set their own.",
    ),
    _Key(
        "PIAGENT_TOOL_MAX_CALLS",
        "tool_max_calls",
        _integer(1, 32),
        "Tool calls run at once in one step; the model gets an error result for the rest.",
    ),
    _Key(
        "PIAGENT_TOOL_REPLY_TIMEOUT",
        "tool_reply_timeout",
        _seconds(1, 3600),
        "Seconds of tool work in one reply; then the model is asked to answer without tools.",
    ),
    _Key(
        "PIAGENT_DELEGATION_MAX_DEPTH",
        "delegation_max_depth",
        _integer(1, 5),
        "How deep agents may ask agents (`delegates:`, the `ask_agent` tool); cycles are always refused.",
    ),
    _Key(
        "PIAGENT_TOOL_ARGUMENTS_MAX_BYTES",
        "tool_arguments_max_bytes",
        _integer(64, 16 * 1024 * 1024),
        "Largest arguments (JSON) of one tool call; larger is an error result and the tool does not run.",
    ),
    _Key(
        "PIAGENT_HTTP_GET_ALLOW",
        "http_get_allow",
        _url_prefixes,
        "Comma-separated URL prefixes `http_get` may fetch (matched on whole path segments); empty: none.",
    ),
    _Key(
        "PIAGENT_HTTP_GET_ALLOW_PRIVATE",
        "http_get_allow_private",
        _boolean,
        "Let `http_get` reach loopback, private and link-local addresses (still only under the prefixes).",
    ),
    _Key(
        "PIAGENT_HTTP_GET_MAX_BYTES",
        "http_get_max_bytes",
        _integer(1024, 64 * 1024 * 1024),
        "Bytes of a body `http_get` reads at most; it stops reading there.",
    ),
    _Key(
        "PIAGENT_HTTP_GET_MAX_REDIRECTS",
        "http_get_max_redirects",
        _integer(0, 20),
        "Redirects `http_get` follows, each checked like the first URL.",
    ),
    _Key(
        "PIAGENT_READ_FILE_DIRS",
        "read_file_dirs",
        _items,
        "Comma-separated folders `read_file` may read from (symlinks out of them refused); empty: none.",
    ),
    _Key(
        "PIAGENT_READ_FILE_MAX_BYTES",
        "read_file_max_bytes",
        _integer(1, 64 * 1024 * 1024),
        "Bytes of a file `read_file` reads at most.",
    ),
    _Key(
        "PIAGENT_SYSTEM_STATUS_DISKS",
        "system_status_disks",
        _items,
        "Comma-separated paths whose filesystems `system_status` reports.",
    ),
)
