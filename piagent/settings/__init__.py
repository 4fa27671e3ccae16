"""piagent's configuration: one frozen value read once from `config.env` and the environment.

Every key is one row of the KEYS table (keys_*.py: environment name, field, parser, meaning); its default
is written once, on the Settings struct below.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgspec
from starlette.config import Config

from piagent.exceptions import SettingsError
from piagent.settings import keys_limits, keys_more, keys_server
from piagent.settings.key import _Key
from piagent.settings.parsers import (
    MIN_KEY_LENGTH,
    PROVIDERS,
    check_api_key,
    parse_urls,
    redact_url,
    show_value,
    split_urls,
)

# The single source of truth for configuration: Settings.from_env, the docs' table and
# `piagent check` all read this tuple, so a key cannot be documented and parsed differently.
KEYS: tuple[_Key, ...] = (*keys_server.KEYS, *keys_limits.KEYS, *keys_more.KEYS)


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
    deep_health_cache: float = 2.0
    chat_page: bool = True
    log_level: str = "info"
    log_format: str = "text"
    metrics: bool = False
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
DEFAULTS: Mapping[str, object] = MappingProxyType(
    dict(zip(Settings.__struct_fields__, Settings.__struct_defaults__, strict=True))
)


__all__ = [
    "DEFAULTS",
    "KEYS",
    "MASK",
    "MIN_KEY_LENGTH",
    "PROVIDERS",
    "Settings",
    "check_api_key",
    "mask_secret",
    "parse_urls",
    "redact_url",
    "show_value",
    "split_urls",
]
