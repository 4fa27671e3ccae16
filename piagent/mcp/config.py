"""The owner's list of MCP servers (`[mcp.servers.<name>]` tables in the TOML file PIAGENT_MCP_FILE names)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from piagent.exceptions import SettingsError
from piagent.settings import Settings

_SERVER_NAME = re.compile(r"^[A-Za-z0-9-]{1,24}$")
# What every stdio server gets from piagent's environment (to find its interpreter and its home, and to
# speak the owner's language); anything else only when the server's `env` names it.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One MCP server: a `command` piagent starts (stdio) or a `url` (Streamable HTTP), and its own limits."""

    name: str = ""
    command: list[str] = []
    url: str = ""
    env: list[str] = []  # names of piagent's environment variables passed to the command
    set_env: dict[str, str] = {}  # variables set for the command, whatever piagent's environment holds
    cwd: str = ""
    timeout: float | None = None  # seconds; None: PIAGENT_MCP_TIMEOUT
    max_output_bytes: int | None = None  # None: PIAGENT_MCP_MAX_OUTPUT_BYTES

    @property
    def transport(self) -> str:
        """`stdio` or `http`."""
        return "stdio" if self.command else "http"

    def child_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The scrubbed environment of the command: the base names, the allowed names, then `set_env`."""
        names = (*BASE_ENV, *self.env)
        env = {name: environ[name] for name in names if name in environ}
        env.update(self.set_env)
        return env


class McpLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The limits every MCP server works under (from the settings; a server may lower or raise its own two)."""

    timeout: float = 30.0
    start_timeout: float = 30.0
    max_output_bytes: int = 16384
    max_message_bytes: int = 1048576
    max_tools: int = 64
    max_tool_bytes: int = 16384
    restart_max: float = 60.0
    restart_min: float = 1.0  # the first wait before a restart; doubles up to restart_max

    @classmethod
    def from_settings(cls, settings: Settings) -> McpLimits:
        """The limits the owner set with PIAGENT_MCP_*."""
        return cls(
            timeout=settings.mcp_timeout,
            start_timeout=settings.mcp_start_timeout,
            max_output_bytes=settings.mcp_max_output_bytes,
            max_message_bytes=settings.mcp_max_message_bytes,
            max_tools=settings.mcp_max_tools,
            max_tool_bytes=settings.mcp_max_tool_bytes,
            restart_max=settings.mcp_restart_max,
            restart_min=min(1.0, settings.mcp_restart_max),
        )


class _File(msgspec.Struct, forbid_unknown_fields=True):
    servers: dict[str, dict[str, Any]] = {}


def _check(name: str, server: ServerConfig) -> ServerConfig:
    if not _SERVER_NAME.match(name):
        raise ValueError("a server's name is 1 to 24 letters, digits or '-' (it prefixes its tools' names)")
    if bool(server.command) == bool(server.url):
        raise ValueError("give either `command` (a list: program and arguments) or `url`, not both")
    if server.command and not all(part for part in server.command):
        raise ValueError("`command` has an empty part")
    if server.url and not server.url.startswith(("http://", "https://")):
        raise ValueError("`url` must be an http:// or https:// URL")
    if server.url and (server.env or server.set_env or server.cwd):
        raise ValueError("`env`, `set_env` and `cwd` are for a `command`, not a `url`")
    if server.timeout is not None and not 0 < server.timeout <= 86_400:
        raise ValueError("`timeout` is seconds, more than 0 and at most 86400")
    if server.max_output_bytes is not None and not 1 <= server.max_output_bytes <= 256 * 1024 * 1024:
        raise ValueError("`max_output_bytes` is from 1 to 268435456")
    return msgspec.structs.replace(server, name=name)


def parse_servers(text: str, source: str = "PIAGENT_MCP_FILE") -> tuple[ServerConfig, ...]:
    """The servers a TOML document lists under `[mcp.servers.<name>]`; other tables are not read here."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{source}: not valid TOML: {exc}") from exc
    servers = []
    try:
        table = msgspec.convert(document.get("mcp", {}), _File)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"{source}: [mcp]: {exc}") from exc
    for name, values in table.servers.items():
        try:
            servers.append(_check(name, msgspec.convert(values, ServerConfig)))
        except (msgspec.ValidationError, ValueError) as exc:
            raise SettingsError(f"{source}: [mcp.servers.{name}]: {exc}") from exc
    return tuple(servers)


def load_servers(path: str) -> tuple[ServerConfig, ...]:
    """The servers listed in the file at `path` (PIAGENT_MCP_FILE); a clear `SettingsError` when it is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"PIAGENT_MCP_FILE={path!r}: cannot be read: {exc.strerror or exc}") from exc
    return parse_servers(text, f"PIAGENT_MCP_FILE={path!r}")
