"""The keys of the limits: tool calls, generations, the Pi's readings, the edge, API keys, the rate."""

from __future__ import annotations

from piagent.settings.key import _Key
from piagent.settings.parsers import _api_keys, _integer, _seconds, _text

KEYS: tuple[_Key, ...] = (
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
)
