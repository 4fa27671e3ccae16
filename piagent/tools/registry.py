"""The tools an owner made available (built-ins set up by the settings, command tools from the tools file),
and the ones each agent may use, checked by name at start-up.

A built-in's module is imported only when some agent lists it, so a server whose agents use no tool pays
nothing for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import httpx

from piagent.exceptions import AgentDefinitionError, SettingsError
from piagent.settings import Settings
from piagent.tools.base import Tool, ToolLimits

if TYPE_CHECKING:
    from piagent.tools.commands import CommandTool

BUILTIN_TOOLS = ("calculator", "clock", "http_get", "read_file", "system_status")


def tool_limits(settings: Settings) -> ToolLimits:
    """The limits every tool call runs under, from the settings."""
    return ToolLimits(
        timeout=settings.tool_timeout,
        output_max_bytes=settings.tool_output_max_bytes,
        arguments_max_bytes=settings.tool_arguments_max_bytes,
    )


def http_get_client(settings: Settings) -> httpx.AsyncClient:
    """A new client for `http_get` (CA bundle loaded only if a prefix is https); the caller closes it."""
    from piagent.tools.http_get import new_client

    return new_client(https=any(prefix.startswith("https:") for prefix in settings.http_get_allow))


def _load_commands(settings: Settings, environ: Mapping[str, str] | None) -> dict[str, CommandTool]:
    if not settings.tools_file:
        return {}
    from piagent.tools.commands import load_commands

    commands = load_commands(
        settings.tools_file,
        timeout=settings.tool_timeout,
        output_max_bytes=settings.tool_output_max_bytes,
        environ=environ,
    )
    clash = sorted(set(commands) & set(BUILTIN_TOOLS))
    if clash:
        raise SettingsError(f"tools file {settings.tools_file}: tool {clash[0]!r}: name: taken by a built-in tool")
    return commands


class ToolCatalog:
    """Every tool the owner made available; `for_agent` picks an agent's tools by name."""

    def __init__(
        self,
        settings: Settings,
        *,
        http_client: httpx.AsyncClient | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """Read the tools file now, so a mistake in it stops start-up; built-ins are made on first use.

        `http_client` serves `http_get` and belongs to the caller (make it with `http_get_client`).
        """
        self._settings = settings
        self._http_client = http_client
        self._commands: dict[str, Tool] = dict(_load_commands(settings, environ))
        self._built: dict[str, Tool] = {}
        self.limits = tool_limits(settings)

    def names(self) -> tuple[str, ...]:
        """Built-in tool names, then the command tools'."""
        return (*BUILTIN_TOOLS, *self._commands)

    def for_agent(self, agent: str, names: Sequence[str]) -> dict[str, Tool]:
        """The tools `agent` lists, by name; an unknown or unusable one is an `AgentDefinitionError`."""
        tools: dict[str, Tool] = {}
        for name in names:
            if name in self._commands:
                tools[name] = self._commands[name]
            elif name in BUILTIN_TOOLS:
                try:
                    tools[name] = self._builtin(name)
                except SettingsError as exc:
                    raise AgentDefinitionError(f"agent {agent!r}: tool {name!r}: {exc.message}") from exc
            else:
                known = ", ".join(self.names())
                raise AgentDefinitionError(f"agent {agent!r}: unknown tool {name!r}; available: {known}")
        return tools

    def _builtin(self, name: str) -> Tool:
        tool = self._built.get(name)
        if tool is None:
            tool = self._built[name] = _make_builtin(name, self._settings, self._http_client)
        return tool


def _make_builtin(name: str, settings: Settings, http_client: httpx.AsyncClient | None) -> Tool:
    if name == "calculator":
        from piagent.tools.calculator import Calculator

        return Calculator()
    if name == "clock":
        from piagent.tools.system import Clock

        return Clock()
    if name == "system_status":
        from piagent.tools.system import SystemStatus

        return SystemStatus(settings.system_status_disks)
    if name == "read_file":
        return _make_read_file(settings)
    return _make_http_get(settings, http_client)


def _make_read_file(settings: Settings) -> Tool:
    from piagent.tools.files import ReadFile, resolve_folders

    if not settings.read_file_dirs:
        raise SettingsError("needs PIAGENT_READ_FILE_DIRS, the folders it may read")
    try:
        folders = resolve_folders(settings.read_file_dirs)
    except ValueError as exc:
        raise SettingsError(f"PIAGENT_READ_FILE_DIRS is not allowed: {exc}") from exc
    return ReadFile(folders, settings.read_file_max_bytes)


def _make_http_get(settings: Settings, http_client: httpx.AsyncClient | None) -> Tool:
    from piagent.tools.addresses import parse_prefix
    from piagent.tools.http_get import HttpGet

    if not settings.http_get_allow:
        raise SettingsError("needs PIAGENT_HTTP_GET_ALLOW, the URL prefixes it may fetch")
    try:
        prefixes = [parse_prefix(prefix) for prefix in settings.http_get_allow]
    except ValueError as exc:
        raise SettingsError(f"PIAGENT_HTTP_GET_ALLOW is not allowed: {exc}") from exc
    if http_client is None:
        raise SettingsError("needs an HTTP client (the server passes one made by http_get_client)")
    try:
        return HttpGet(
            http_client,
            prefixes,
            allow_private=settings.http_get_allow_private,
            max_bytes=settings.http_get_max_bytes,
            max_redirects=settings.http_get_max_redirects,
            timeout=settings.tool_timeout,
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def describe_tools(settings: Settings, environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """Each available tool as (name, kind, what it can reach), for `piagent tools` and `piagent check`.

    Reads the tools file, so a mistake in it raises `SettingsError` here as at start-up.
    """
    disks = ", ".join(settings.system_status_disks) or "none"
    reach = "private addresses too" if settings.http_get_allow_private else "public addresses only"
    http = (
        f"URLs under {', '.join(settings.http_get_allow)}; {reach}"
        if settings.http_get_allow
        else "unusable: PIAGENT_HTTP_GET_ALLOW is empty"
    )
    files = (
        "files under " + ", ".join(settings.read_file_dirs)
        if settings.read_file_dirs
        else "unusable: PIAGENT_READ_FILE_DIRS is empty"
    )
    rows = [
        ("calculator", "built-in", "arithmetic only; reaches nothing"),
        ("clock", "built-in", "the server's clock and time zone data"),
        ("http_get", "built-in", http),
        ("read_file", "built-in", files),
        ("system_status", "built-in", f"/sys/class/thermal, /proc; disk space of {disks}"),
    ]
    for name, tool in _load_commands(settings, environ).items():
        rows.append((name, "command", f"runs {' '.join(tool.argv)} in {tool.cwd} (no shell; {tool.timeout:g} s)"))
    return rows
