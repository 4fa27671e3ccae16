"""MCP servers supervised: started on first use, restarted with back-off when a stdio one dies, closed once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from piagent.mcp.client import MAX_NAME, Channel, Session, exposed_name, render_result
from piagent.mcp.config import McpLimits, ServerConfig, load_servers
from piagent.mcp.http import HttpChannel, SessionExpired
from piagent.mcp.messages import CallToolResult, McpError, McpTimeout, McpUnavailable, ToolDefinition
from piagent.mcp.stdio import StdioChannel
from piagent.schemas import McpServerHealth as ServerStatus  # one definition, shown by /health and check
from piagent.settings import Settings
from piagent.tools.base import Tool, ToolResult

__all__ = ["McpServer", "McpServers", "McpTool", "ServerStatus"]

logger = logging.getLogger("piagent.mcp")

# States: idle (not started yet), starting, ok, backoff (died; a restart is due), down (failed; tried again on
# the next use once its wait is over), closed.
Clock = Callable[[], float]


class McpTool:
    """One tool of an MCP server, as a `piagent.tools.Tool`: a name, a description, a JSON schema, `run`."""

    __slots__ = ("description", "name", "parameters", "remote_name", "server")

    def __init__(self, server: McpServer, definition: ToolDefinition) -> None:
        self.server = server
        self.remote_name = definition.name
        self.name = exposed_name(server.name, definition.name)
        self.description = definition.description or ""
        self.parameters: dict[str, Any] = definition.input_schema

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        """The tool's result; every failure is a failed result saying what went wrong, never an exception."""
        return await self.server.call(self.remote_name, arguments)


if TYPE_CHECKING:
    _CONTRACT: type[Tool] = McpTool  # mypy checks here that an MCP tool is a piagent tool


class McpServer:
    """One configured server and its supervision."""

    def __init__(
        self,
        config: ServerConfig,
        limits: McpLimits,
        client: httpx.AsyncClient | None,
        environ: Mapping[str, str],
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = config.name
        self.config = config
        self.limits = limits
        self.timeout = config.timeout or limits.timeout
        self.max_output_bytes = config.max_output_bytes or limits.max_output_bytes
        if config.url and client is None:
            raise ValueError(f"mcp server {config.name!r} is reached over HTTP: give it an httpx client")
        self._client = client
        self._env = config.child_env(environ) if config.command else {}
        self._clock = clock
        self._lock = asyncio.Lock()
        self._session: Session | None = None
        # The latest channel, also once it died: closing waits until its process is gone for good.
        self._channel: Channel | None = None
        self._tools: list[McpTool] = []
        self.state = "idle"
        self.last_error = ""
        self.restarts = 0
        self._backoff = limits.restart_min
        self._retry_at = 0.0
        self._started_at = 0.0
        self._restarter: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The stdio server's process id while it runs."""
        channel = self._channel
        return channel.pid if isinstance(channel, StdioChannel) and channel.broken is None else None

    def status(self) -> ServerStatus:
        """Its state now, without starting it."""
        retry_in = max(0.0, self._retry_at - self._clock()) if self.state in ("backoff", "down") else 0.0
        return ServerStatus(
            name=self.name,
            transport=self.config.transport,
            state=self.state,
            tools=len(self._tools),
            restarts=self.restarts,
            last_error=self.last_error,
            retry_in=round(retry_in, 3),
        )

    async def tools(self) -> list[McpTool]:
        """Its tools, starting it if it is not running, listed again if it said they changed."""
        session = await self._running()
        if session.channel.tools_changed:
            async with self._lock:
                if session.channel.tools_changed:
                    session.channel.tools_changed = False
                    try:
                        self._tools = await self._list_tools(session)
                    except BaseException:
                        session.channel.tools_changed = True  # the next use tries again
                        raise
        return list(self._tools)

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolResult:
        """Call one of its tools; every failure is a failed result naming this server."""
        try:
            result = await self._call(tool, arguments)
        except McpError as exc:
            return ToolResult(False, f"mcp server {self.name!r}: {exc.message}")
        return render_result(result, self.max_output_bytes)

    async def _call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        for attempt in range(2):
            session = await self._running()
            try:
                return await session.call_tool(tool, arguments, self.timeout)
            except SessionExpired:
                # The HTTP server restarted or dropped the session: one new handshake, one more try.
                await self._forget(session)
                if attempt:
                    raise
            except McpUnavailable as exc:
                if self.config.url:
                    # No process tells piagent an HTTP server is gone: this failure is the sign.
                    await self._forget(session)
                    self._failed(exc.message, "down")
                raise
        raise AssertionError("unreachable")

    async def _running(self) -> Session:
        session = self._session
        if session is not None and session.channel.broken is None:
            return session
        async with self._lock:
            if self._session is not None and self._session.channel.broken is None:
                return self._session
            if self.state == "closed":
                raise McpUnavailable("is shut down")
            wait = self._retry_at - self._clock()
            if wait > 0:
                raise McpUnavailable(f"is down ({self.last_error}); tried again in {wait:.1f} s")
            return await self._start()

    def _new_channel(self) -> Channel:
        if self.config.command:
            return StdioChannel(
                self.config.command,
                self._env,
                self.config.cwd or None,
                self.limits.max_message_bytes,
                on_exit=self._died,
            )
        assert self._client is not None  # checked in __init__
        return HttpChannel(self.config.url, self._client, self.limits.max_message_bytes)

    async def _start(self) -> Session:
        self.state = "starting"
        if self._channel is not None:
            await self._channel.aclose()
        channel = self._channel = self._new_channel()
        session = Session(channel)
        try:
            seconds = self.limits.start_timeout
            try:
                async with asyncio.timeout(seconds):
                    await channel.start()
                    await session.initialize(seconds)
                    tools = await self._list_tools(session)
            except TimeoutError as exc:
                raise McpTimeout(f"did not finish starting within {seconds:g} s") from exc
        except McpError as exc:
            await channel.aclose()
            self._failed(exc.message, "down")
            raise
        except BaseException:
            await channel.aclose()
            self.state = "down" if self.state == "starting" else self.state
            raise
        self._tools = tools
        self._session = session
        self._started_at = self._clock()
        self.state = "ok"
        logger.info("mcp server %r started: %d tools", self.name, len(self._tools))
        return session

    async def _list_tools(self, session: Session) -> list[McpTool]:
        limits = self.limits
        return self._adapt(await session.list_tools(limits.start_timeout, limits.max_tools, limits.max_tool_bytes))

    def _adapt(self, definitions: Iterable[ToolDefinition]) -> list[McpTool]:
        tools: list[McpTool] = []
        seen: set[str] = set()
        for definition in definitions:
            tool = McpTool(self, definition)
            if len(tool.name) > MAX_NAME or tool.name in seen:
                logger.warning("mcp server %r: tool %r left out: its name is too long or taken", self.name, tool.name)
                continue
            seen.add(tool.name)
            tools.append(tool)
        return tools

    def _failed(self, reason: str, state: str) -> None:
        self.last_error = reason
        self.state = state
        self._retry_at = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self.limits.restart_max)

    def _died(self, reason: str) -> None:
        # Called by the stdio channel when its process ended on its own or broke the protocol; a server that
        # dies while starting is the start's failure, handled there.
        if self.state != "ok":
            return
        if self._clock() - self._started_at >= self.limits.restart_max:
            self._backoff = self.limits.restart_min  # it had been stable: start the waits afresh
        self._session = None
        self._failed(reason, "backoff")
        logger.warning("mcp server %r %s; restarting in %.1f s", self.name, reason, self._retry_at - self._clock())
        if self._restarter is None or self._restarter.done():
            self._restarter = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        # Starts directly, not through `_running`: a loop may wake a hair before the wait is over (uvloop
        # rounds its timers to milliseconds), and `_running` would then refuse and the count go up twice.
        while True:
            await asyncio.sleep(max(0.0, self._retry_at - self._clock()))
            async with self._lock:
                if self.state == "closed" or self._session is not None:
                    return  # shut down, or started meanwhile by a call
                self.restarts += 1
                try:
                    await self._start()
                    return
                except McpError:
                    self.state = "backoff"  # this task tries again when the wait is over

    async def _forget(self, session: Session) -> None:
        async with self._lock:
            if self._session is session:
                self._session = None
        await session.channel.aclose()

    async def aclose(self) -> None:
        """Stop it for good: a stdio server's process group ended, an HTTP session deleted."""
        self.state = "closed"
        if self._restarter is not None:
            self._restarter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restarter
        async with self._lock:
            self._session = None
            if self._channel is not None:
                await self._channel.aclose()


class McpServers:
    """Every server the owner configured, by name; nothing starts until a tool is asked for."""

    def __init__(
        self,
        configs: Iterable[ServerConfig],
        limits: McpLimits,
        client: httpx.AsyncClient | None,
        environ: Mapping[str, str],
    ) -> None:
        self.servers = {config.name: McpServer(config, limits, client, environ) for config in configs}

    @classmethod
    def from_settings(
        cls, settings: Settings, client: httpx.AsyncClient | None, environ: Mapping[str, str]
    ) -> McpServers:
        """The servers PIAGENT_MCP_FILE lists, under the PIAGENT_MCP_* limits; a wrong file raises SettingsError."""
        return cls(load_servers(settings.mcp_file), McpLimits.from_settings(settings), client, environ)

    async def tools(self, names: Iterable[str] | None = None) -> list[McpTool]:
        """The tools of the named servers (all when None); a server that cannot start adds none (see `status`)."""
        chosen = [self.servers[name] for name in (self.servers if names is None else names) if name in self.servers]
        lists = await asyncio.gather(*(self._tools_of(server) for server in chosen))
        return [tool for tools in lists for tool in tools]

    @staticmethod
    async def _tools_of(server: McpServer) -> list[McpTool]:
        try:
            return await server.tools()
        except McpError as exc:
            logger.warning("mcp server %r: %s", server.name, exc.message)
            return []

    def status(self) -> list[ServerStatus]:
        """Each server's state, without starting any."""
        return [server.status() for server in self.servers.values()]

    async def check(self) -> list[ServerStatus]:
        """Each server reached (started if need be), then its state: for `piagent check`."""
        await self.tools()
        return self.status()

    async def aclose(self) -> None:
        """Stop every server at once (the lifespan's shutdown)."""
        await asyncio.gather(*(server.aclose() for server in self.servers.values()))
