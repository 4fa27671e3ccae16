"""The keys of serving, the upstreams, memory, timeouts and message sizes."""

from __future__ import annotations

from piagent.settings.key import _Key
from piagent.settings.parsers import (
    PROVIDERS,
    _boolean,
    _choice,
    _integer,
    _memory_url,
    _seconds,
    _text,
    _word,
    parse_urls,
)

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
)
