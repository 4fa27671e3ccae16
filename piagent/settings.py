"""piagent's configuration: one frozen value read once from `config.env` and the environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import msgspec
from starlette.config import Config

from piagent.exceptions import SettingsError

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
PROVIDERS = ("ollama", "openai")


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return value

    return parse


def _seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high or value != value:
            raise ValueError(f"a number of seconds from {low:g} to {high:g}")
        return value

    return parse


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def _url(text: str) -> str:
    url = text.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or " " in rest:
        raise ValueError("an http:// or https:// URL")
    return url


def _memory_url(text: str) -> str:
    url = text.strip()
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    allowed = "memory://, sqlite:///<path> or redis://host:port/db"
    if not sep or " " in url:
        raise ValueError(allowed)
    if scheme == "memory" and not rest:
        return "memory://"
    if scheme == "sqlite" and rest.startswith("/") and rest.strip("/"):
        return url
    if scheme in ("redis", "rediss") and rest and not rest.startswith("/"):
        return url
    raise ValueError(allowed)


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, for logs and `piagent config`.

    A user name alone is hidden too: `https://<token>@host` carries the secret there.
    """
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user + ':' if colon else ''}***@{host}{slash}{path}"


def parse_urls(text: str) -> str:
    """One or more comma-separated http(s) URLs, normalized (no trailing slash) and joined by commas."""
    urls = [_url(part) for part in text.split(",")]
    if len(set(urls)) != len(urls):
        raise ValueError("comma-separated http:// or https:// URLs, each once")
    return ",".join(urls)


def split_urls(text: str) -> tuple[str, ...]:
    """The URLs of a value `parse_urls` produced (a setting or an agent's `url:`)."""
    return tuple(text.split(",")) if text else ()


def _word(text: str) -> str:
    value = text.strip()
    if not value or any(ch.isspace() for ch in value):
        raise ValueError("a non-empty value without spaces")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError("one of " + ", ".join(allowed))
        return value

    return parse


def _origins(text: str) -> tuple[str, ...]:
    origins = tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError("a comma-separated list of origins like https://pi.local:8000, or *")
    return origins


def _host_names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip().rstrip(".").lower() for part in text.split(",") if part.strip())
    for name in names:
        bare = name.removeprefix("*.")
        if name != "*" and (not bare or not all(ch.isalnum() or ch in "-._" for ch in bare)):
            raise ValueError("a comma-separated list of host names like raspberrypi.local or *.home.arpa, or *")
    return names


def _text(text: str) -> str:
    return text.strip()


def _items(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _url_prefixes(text: str) -> tuple[str, ...]:
    prefixes = _items(text)
    if not all(prefix.startswith(("http://", "https://")) for prefix in prefixes):
        raise ValueError("comma-separated URL prefixes like http://192.168.1.20/api/")
    return prefixes


# Shorter keys could be guessed, and the owner id derived from a key would let a guess be checked offline.
MIN_KEY_LENGTH = 16


def check_api_key(key: str) -> str:
    """`key` if it is long enough and has no spaces; the error never repeats the key."""
    if len(key) < MIN_KEY_LENGTH or any(ch.isspace() or not ch.isprintable() for ch in key):
        raise ValueError(
            f"keys of at least {MIN_KEY_LENGTH} printable characters without spaces "
            "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return key


def _api_keys(text: str) -> tuple[str, ...]:
    return tuple(check_api_key(part.strip()) for part in text.split(",") if part.strip())


class _Key(NamedTuple):
    """One configuration key: its environment name, the Settings field, parser and meaning.

    Its default is the Settings field's own (written once, there), shown as the environment spells it.
    """

    env: str
    field: str
    parse: Callable[[str], Any]
    meaning: str
    secret: bool = False  # never printed, not even in an error

    @property
    def default(self) -> str:
        """The default as a `PIAGENT_*` value: what `parse` turns back into the Settings default."""
        return show_value(_DEFAULTS[self.field])


def show_value(value: object) -> str:
    """A setting's value spelled as in the environment (`true`, `5`, `a,b`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


# The single source of truth for configuration: Settings.from_env, the README table and
# `piagent check` all read this tuple, so a key cannot be documented and parsed differently.
KEYS: tuple[_Key, ...] = (
    _Key("PIAGENT_HOST", "host", _word, "Address to listen on (0.0.0.0 for the LAN; see 'On a LAN')."),
    _Key("PIAGENT_PORT", "port", _integer(1, 65535), "TCP port to listen on."),
    _Key(
        "PIAGENT_PROVIDER",
        "provider",
        _choice(*PROVIDERS),
        "Upstream protocol of agents whose prompt file names none: `ollama` or `openai` (see 'Upstreams').",
    ),
    _Key(
        "PIAGENT_OLLAMA_URL",
        "ollama_url",
        parse_urls,
        "Base URL of the Ollama server; several, comma-separated, are balanced (see 'Upstreams').",
    ),
    _Key(
        "PIAGENT_OPENAI_URL",
        "openai_url",
        parse_urls,
        "Base URL of an OpenAI-compatible server (llama.cpp, LM Studio, vLLM, ...); a trailing `/v1` is optional.",
    ),
    _Key(
        "PIAGENT_OPENAI_API_KEY",
        "openai_api_key",
        _text,
        "Key sent as `Authorization: Bearer` to OpenAI-compatible servers; empty: none.",
        secret=True,
    ),
    _Key(
        "PIAGENT_UPSTREAM_COOLOFF",
        "upstream_cooloff",
        _seconds(0, 3600),
        "Seconds an upstream that refused a connection is tried only after the others.",
    ),
    _Key("PIAGENT_MODEL", "model", _word, "Model for agents whose prompt file names none."),
    _Key("PIAGENT_PROMPTS_DIR", "prompts_dir", _text, "Folder of agent files (`<name>.md` or `.txt`)."),
    _Key("PIAGENT_DEFAULT_AGENT", "default_agent", _word, "Agent used when a request names none."),
    _Key("PIAGENT_MEMORY_ENABLED", "memory_enabled", _boolean, "Keep conversation history between requests."),
    _Key(
        "PIAGENT_MEMORY_URL",
        "memory_url",
        _memory_url,
        "Where conversations live: `memory://` (this process), `sqlite:///piagent.db` "
        "(a file; `sqlite:////abs/path.db`) or `redis://host:6379/0` (needs `piagent[redis]`).",
    ),
    _Key(
        "PIAGENT_MEMORY_MAX_TURNS",
        "memory_max_turns",
        _integer(2, 1000),
        "Messages kept per conversation (a user message and a reply are two); agents may lower it.",
    ),
    _Key(
        "PIAGENT_MEMORY_TTL",
        "memory_ttl",
        _seconds(1, 31_536_000),
        "Seconds after its last use that a conversation is forgotten.",
    ),
    _Key(
        "PIAGENT_MEMORY_MAX_CONVERSATIONS",
        "memory_max_conversations",
        _integer(1, 10_000_000),
        "Conversations kept in all; the least recently used goes first.",
    ),
    _Key(
        "PIAGENT_MEMORY_MAX_BYTES",
        "memory_max_bytes",
        _integer(64 * 1024, 1024 * 1024 * 1024),
        "Bytes of text the in-process store (`memory://`) keeps in all; the least recently used goes first.",
    ),
    _Key(
        "PIAGENT_CONNECT_TIMEOUT",
        "connect_timeout",
        _seconds(0.01, 600),
        "Seconds to wait for a connection to the model server.",
    ),
    _Key(
        "PIAGENT_FIRST_TOKEN_TIMEOUT",
        "first_token_timeout",
        _seconds(0.01, 86_400),
        "Seconds to wait for the model server to start its reply; covers a cold model load.",
    ),
    _Key(
        "PIAGENT_READ_TIMEOUT",
        "read_timeout",
        _seconds(0.01, 86_400),
        "Seconds of silence allowed once the model server has started its reply (the gap between tokens).",
    ),
    _Key(
        "PIAGENT_MAX_CONNECTIONS",
        "max_connections",
        _integer(1, 1000),
        "Connections to the model server at most (the shared client's pool).",
    ),
    _Key(
        "PIAGENT_FAST_TRANSPORT",
        "fast_transport",
        _boolean,
        "Talk to a plain-http model server through piagent's own lean HTTP transport; false: httpx's default.",
    ),
    _Key(
        "PIAGENT_KEEP_ALIVE",
        "keep_alive",
        _text,
        "Ollama `keep_alive` sent with each request (e.g. `10m`, `-1`); empty: Ollama's default.",
    ),
    _Key(
        "PIAGENT_MAX_BODY_BYTES",
        "max_body_bytes",
        _integer(64, 64 * 1024 * 1024),
        "Largest request body accepted; larger gets 413.",
    ),
    _Key(
        "PIAGENT_MAX_MESSAGE_CHARS",
        "max_message_chars",
        _integer(1, 10_000_000),
        "Longest `message` accepted; longer gets 422.",
    ),
    _Key(
        "PIAGENT_MAX_LINE_BYTES",
        "max_line_bytes",
        _integer(1024, 256 * 1024 * 1024),
        "Longest single line accepted from the model server, and largest small JSON answer (`/api/tags`); longer "
        "is an upstream error.",
    ),
    _Key(
        "PIAGENT_MAX_REPLY_BYTES",
        "max_reply_bytes",
        _integer(1024, 64 * 1024 * 1024),
        "Longest reply text (UTF-8 bytes) taken from the model server; past it the upstream request is closed "
        'and the reply ends as a length stop (`done_reason: "length"`), the part kept stored.',
    ),
    _Key(
        "PIAGENT_MAX_ERROR_BYTES",
        "max_error_bytes",
        _integer(1024, 16 * 1024 * 1024),
        "Most bytes of a model server's error body read for its message; the rest is not read (the connection "
        "is closed).",
    ),
    _Key(
        "PIAGENT_MAX_UPSTREAM_HEAD_BYTES",
        "max_upstream_head_bytes",
        _integer(1024, 16 * 1024 * 1024),
        "Largest response head (status line and headers) read from a plain-http model server; larger is an "
        "upstream error. httpx's transport (https) has its own bound, 100 KiB.",
    ),
    _Key(
        "PIAGENT_MAX_UPSTREAM_HEADERS",
        "max_upstream_headers",
        _integer(1, 10_000),
        "Most header fields in one response from a plain-http model server; more is an upstream error.",
    ),
    _Key(
        "PIAGENT_MAX_TOKENS",
        "max_tokens",
        _integer(1, 1_000_000),
        "Most tokens one reply may ask for (`max_tokens` over it gets 422); also sent when nobody sets one.",
    ),
    _Key(
        "PIAGENT_MAX_TOOLS",
        "max_tools",
        _integer(1, 10_000),
        "Most tools one request may offer the model (`tools` longer gets 422).",
    ),
    _Key(
        "PIAGENT_MAX_SCHEMA_DEPTH",
        "max_schema_depth",
        _integer(2, 1000),
        "Deepest nesting of a tool's parameter schema or a structured-output schema; deeper gets 422.",
    ),
    _Key(
        "PIAGENT_MAX_TOOL_CALLS",
        "max_tool_calls",
        _integer(1, 1000),
        "Most tool calls one reply of the model server may ask for; more is an upstream error.",
    ),
    _Key(
        "PIAGENT_MAX_TOOL_ARGUMENT_BYTES",
        "max_tool_argument_bytes",
        _integer(2, 64 * 1024 * 1024),
        "Longest arguments (JSON) of one tool call from the model server; longer is an upstream error.",
    ),
    _Key(
        "PIAGENT_MAX_CONCURRENT",
        "max_concurrent",
        _integer(1, 1000),
        "Generations run at once; match the model server's parallelism (OLLAMA_NUM_PARALLEL).",
    ),
    _Key(
        "PIAGENT_MAX_QUEUE",
        "max_queue",
        _integer(0, 100_000),
        "Generations waiting for a slot at most; past them the answer is 503 `busy` with Retry-After.",
    ),
    _Key(
        "PIAGENT_MIN_AVAILABLE_MB",
        "min_available_mb",
        _integer(0, 1_000_000),
        "A generation is refused (503 `low_memory`) while MemAvailable (/proc/meminfo) is under this many MiB; 0: off.",
    ),
    _Key(
        "PIAGENT_MAX_TEMPERATURE_C",
        "max_temperature_c",
        _integer(0, 150),
        "A generation is refused (503 `too_hot`) while thermal zone 0 (the Pi's SoC) is over this many °C; 0: off.",
    ),
    _Key(
        "PIAGENT_MAX_HEADER_BYTES",
        "max_header_bytes",
        _integer(1024, 1024 * 1024),
        "Largest request head (request line and headers) read; larger gets 431 and the connection is closed.",
    ),
    _Key(
        "PIAGENT_MAX_HEADERS",
        "max_headers",
        _integer(1, 10_000),
        "Most header fields in one request; more gets 431 and the connection is closed.",
    ),
    _Key(
        "PIAGENT_HEADER_TIMEOUT",
        "header_timeout",
        _seconds(0.1, 3600),
        "Seconds a connection has to send a whole request head (also each later one on a kept-alive connection).",
    ),
    _Key(
        "PIAGENT_BODY_TIMEOUT",
        "body_timeout",
        _seconds(0.1, 3600),
        "Seconds of silence allowed between pieces of a request body; then the connection is closed.",
    ),
    _Key(
        "PIAGENT_MAX_OPEN_CONNECTIONS",
        "max_open_connections",
        _integer(1, 1_000_000),
        "Client connections open at once; a new one past it gets 503 and is closed. Kept below the open-file limit.",
    ),
    _Key(
        "PIAGENT_API_KEYS",
        "api_keys",
        _api_keys,
        "Comma-separated API keys; when any is set, every endpoint but `/health` needs `Authorization: Bearer`.",
        secret=True,
    ),
    _Key(
        "PIAGENT_API_KEYS_FILE",
        "api_keys_file",
        _text,
        "A file of API keys, one a line (`#` comments), added to `PIAGENT_API_KEYS`.",
    ),
    _Key(
        "PIAGENT_RATE_LIMIT",
        "rate_limit",
        _integer(0, 1_000_000),
        "Requests a minute per API key (per client address without keys), in bursts up to it; 0: off.",
    ),
    _Key(
        "PIAGENT_SHUTDOWN_GRACE",
        "shutdown_grace",
        _seconds(0, 3600),
        "Seconds running generations get to finish on SIGTERM before they are ended.",
    ),
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
        "PIAGENT_CHAT_PAGE",
        "chat_page",
        _boolean,
        "Serve the built-in chat page at `GET /`; false: `/` answers 404.",
    ),
    _Key("PIAGENT_LOG_LEVEL", "log_level", _choice(*_LOG_LEVELS), "Log level."),
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


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting piagent has; build it with `Settings.from_env()` or by hand in tests."""

    host: str = "127.0.0.1"
    port: int = 8000
    provider: str = "ollama"
    ollama_url: str = "http://127.0.0.1:11434"
    openai_url: str = "http://127.0.0.1:8080"
    openai_api_key: str = ""
    upstream_cooloff: float = 5.0
    model: str = "qwen2.5:0.5b"
    prompts_dir: str = "prompts"
    default_agent: str = "general"
    memory_enabled: bool = True
    memory_url: str = "memory://"
    memory_max_turns: int = 20
    memory_ttl: float = 3600.0
    memory_max_conversations: int = 1000
    # Stored text stays well under the unit's MemoryHigh (96M) beside a ~40 MB process.
    memory_max_bytes: int = 16 * 1024 * 1024
    connect_timeout: float = 3.0
    first_token_timeout: float = 300.0
    read_timeout: float = 60.0
    max_connections: int = 16
    fast_transport: bool = True
    keep_alive: str = ""
    max_body_bytes: int = 65536
    max_message_chars: int = 16000
    max_line_bytes: int = 1048576
    max_reply_bytes: int = 262144
    max_error_bytes: int = 65536
    max_upstream_head_bytes: int = 65536
    max_upstream_headers: int = 100
    max_tokens: int = 1024
    max_tools: int = 64
    max_schema_depth: int = 32
    max_tool_calls: int = 16
    max_tool_argument_bytes: int = 65536
    max_concurrent: int = 1
    max_queue: int = 8
    min_available_mb: int = 32
    max_temperature_c: int = 80
    max_header_bytes: int = 16384
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_open_connections: int = 512
    api_keys: tuple[str, ...] = ()
    api_keys_file: str = ""
    rate_limit: int = 0
    shutdown_grace: float = 8.0
    mcp_file: str = ""
    mcp_timeout: float = 30.0
    mcp_start_timeout: float = 30.0
    mcp_max_output_bytes: int = 16384
    mcp_max_message_bytes: int = 1048576
    mcp_max_tools: int = 64
    mcp_max_tool_bytes: int = 16384
    mcp_restart_max: float = 60.0
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    chat_page: bool = True
    log_level: str = "info"
    log_format: str = "text"
    access_log: bool = True
    startup_check: bool = True
    log_content: bool = False
    tools_file: str = ""
    tool_timeout: float = 10.0
    tool_output_max_bytes: int = 16384
    tool_max_steps: int = 6
    tool_max_calls: int = 4
    tool_reply_timeout: float = 120.0
    delegation_max_depth: int = 2
    tool_arguments_max_bytes: int = 16384
    http_get_allow: tuple[str, ...] = ()
    http_get_allow_private: bool = False
    http_get_max_bytes: int = 262144
    http_get_max_redirects: int = 3
    read_file_dirs: tuple[str, ...] = ()
    read_file_max_bytes: int = 65536
    system_status_disks: tuple[str, ...] = ("/",)

    def __post_init__(self) -> None:
        if self.max_concurrent > self.max_connections:
            raise SettingsError(
                f"PIAGENT_MAX_CONCURRENT={self.max_concurrent} is not allowed: expected at most "
                f"PIAGENT_MAX_CONNECTIONS ({self.max_connections}), or generations would wait for a connection"
            )

    def __repr__(self) -> str:
        # Without the API keys, and without a password in the memory URL: a repr can end up in a log.
        shown = {key.field: getattr(self, key.field) for key in KEYS if not key.secret}
        shown["memory_url"] = redact_url(self.memory_url)
        return "Settings(" + ", ".join(f"{field}={value!r}" for field, value in shown.items()) + ", ...)"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: str | None = None) -> Settings:
        """Read `PIAGENT_CONFIG` (default `config.env`, if present), then the environment, which wins.

        A wrong value raises `SettingsError` naming the key, the value and what is allowed.
        """
        env = os.environ if environ is None else environ
        if env_file is None:
            env_file = env.get("PIAGENT_CONFIG")
            if env_file is not None and not Path(env_file).is_file():
                raise SettingsError(f"PIAGENT_CONFIG={env_file!r}: no such file")
        if env_file is None and Path("config.env").is_file():
            env_file = "config.env"
        config = Config(env_file, environ=env)
        values: dict[str, Any] = {}
        for key in KEYS:
            raw = str(config.get(key.env, default=key.default))
            try:
                values[key.field] = key.parse(raw)
            except ValueError as exc:
                shown = "<hidden>" if key.secret else repr(raw)
                raise SettingsError(f"{key.env}={shown} is not allowed: expected {exc}") from exc
        return cls(**values)

    def default_urls(self, provider: str) -> str:
        """The comma-separated upstream URLs agents of this provider use unless they name their own."""
        return self.openai_url if provider == "openai" else self.ollama_url

    def describe(self) -> list[tuple[str, str]]:
        """Each key with its current value as text, secrets masked, for `piagent config` and `piagent check`."""
        rows = []
        for key in KEYS:
            value = getattr(self, key.field)
            if isinstance(value, tuple):
                text = ",".join(value)
            elif isinstance(value, bool):
                text = str(value).lower()
            else:
                text = str(value)
            # A password or an API key must not reach a terminal or a log.
            rows.append((key.env, mask_secret(key.env, text)))
        return rows


# A key whose name holds one of these carries a secret (API keys, tokens, passwords) and is never printed.
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
_KEYS_BY_ENV = {key.env: key for key in KEYS}
MASK = "***"


def mask_secret(name: str, text: str) -> str:
    """`text` fit to print: hidden whole when `name` says it is a secret, any URL's password hidden otherwise.

    piagent's own keys say so themselves (so `PIAGENT_MAX_TOKENS` is shown and `PIAGENT_API_KEYS` is
    not); any other name is judged by the words in it.
    """
    if not text:
        return text
    own = _KEYS_BY_ENV.get(name)
    if own.secret if own is not None else any(marker in name.upper() for marker in _SECRET_MARKERS):
        return MASK
    return ",".join(redact_url(part) for part in text.split(","))


# Every field's default, read off the Struct once (read only: the KEYS table shows them).
_DEFAULTS: Mapping[str, object] = MappingProxyType(
    dict(zip(Settings.__struct_fields__, Settings.__struct_defaults__, strict=True))
)
