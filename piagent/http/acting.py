"""What agents act with: their tools and MCP servers, checked at start-up and opened by the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx

from piagent.agents import Agent, Agents
from piagent.exceptions import AgentDefinitionError
from piagent.loop import AgentTools, LoopLimits
from piagent.settings import Settings
from piagent.tools.base import Tool
from piagent.tools.registry import ToolCatalog, http_get_client, tool_limits

if TYPE_CHECKING:
    from piagent.mcp.servers import McpServers

McpTools = Callable[[Sequence[str]], Awaitable[Sequence[Tool]]]


class Acting:
    """What the lifespan opened for the agents that act: their tools, and the MCP servers (if any)."""

    __slots__ = ("agents", "mcp")

    def __init__(self, agents: dict[str, AgentTools], mcp: McpServers | None) -> None:
        self.agents = agents
        self.mcp = mcp

    @property
    def mcp_tools(self) -> McpTools | None:
        """Where the chat service gets an agent's MCP tools (None without MCP servers)."""
        return self.mcp.tools if self.mcp is not None else None


def loop_limits(settings: Settings, agent: Agent) -> LoopLimits:
    """The settings' tool-loop limits, with the agent's own `tool_limits:` over them."""
    own: Mapping[str, Any] = agent.tool_limits
    tool = tool_limits(settings)
    return LoopLimits(
        max_steps=int(own.get("max_steps", settings.tool_max_steps)),
        max_calls=int(own.get("max_calls", settings.tool_max_calls)),
        reply_timeout=float(own.get("reply_timeout", settings.tool_reply_timeout)),
        tool=type(tool)(
            timeout=float(own.get("timeout", tool.timeout)),
            output_max_bytes=int(own.get("output_max_bytes", tool.output_max_bytes)),
            arguments_max_bytes=tool.arguments_max_bytes,
        ),
    )


def _acts(agent: Agent) -> bool:
    return bool(agent.tools or agent.delegates or agent.mcp)


def check_agent_tools(settings: Settings, agents: Agents, environ: Mapping[str, str]) -> None:
    """Stop start-up on a tool an agent lists that does not exist or cannot work, or an unknown MCP server."""
    if not any(_acts(agent) for agent in agents.values()):
        return
    catalog = ToolCatalog(settings, environ=environ)
    servers = _mcp_names(settings) if any(agent.mcp for agent in agents.values()) else set()
    for agent in agents.values():
        # http_get gets its client from the lifespan: here its settings are checked by the catalog's
        # own rules once a client exists, so only its being configured is checked now.
        catalog.for_agent(agent.name, [name for name in agent.tools if name != "http_get"])
        if "http_get" in agent.tools and not settings.http_get_allow:
            raise AgentDefinitionError(
                f"agent {agent.name!r}: tool 'http_get' needs PIAGENT_HTTP_GET_ALLOW, the URL prefixes it may fetch"
            )
        unknown = [name for name in agent.mcp if name not in servers]
        if unknown:
            known = ", ".join(sorted(servers)) or "none (PIAGENT_MCP_FILE is empty)"
            raise AgentDefinitionError(f"agent {agent.name!r}: unknown MCP servers {unknown!r}; configured: {known}")


def mcp_urls(settings: Settings) -> list[str]:
    """The URLs of the MCP servers over HTTP: the shared client must be able to reach them too (https)."""
    if not settings.mcp_file:
        return []
    from piagent.mcp.config import load_servers

    return [server.url for server in load_servers(settings.mcp_file) if server.url]


def _mcp_names(settings: Settings) -> set[str]:
    if not settings.mcp_file:
        return set()
    from piagent.mcp.config import load_servers

    return {server.name for server in load_servers(settings.mcp_file)}


@asynccontextmanager
async def open_agent_tools(
    settings: Settings, agents: Agents, client: httpx.AsyncClient, environ: Mapping[str, str]
) -> AsyncIterator[Acting]:
    """Each acting agent's tools and limits, and the MCP tools source; closes what it opened (the
    `http_get` client, the MCP servers it started) on the way out. Agents without tools cost nothing."""
    acting_agents = [agent for agent in agents.values() if _acts(agent)]
    async with AsyncExitStack() as stack:
        http_client = None
        if any("http_get" in agent.tools for agent in acting_agents):
            http_client = await stack.enter_async_context(http_get_client(settings))
        catalog = ToolCatalog(settings, http_client=http_client, environ=environ) if acting_agents else None
        servers = None
        if any(agent.mcp for agent in acting_agents):
            from piagent.mcp.servers import McpServers

            servers = McpServers.from_settings(settings, client, environ)
            stack.push_async_callback(servers.aclose)
        acting = {
            agent.name: AgentTools(
                catalog.for_agent(agent.name, agent.tools) if catalog is not None else {},
                loop_limits(settings, agent),
                agent.mcp,
            )
            for agent in acting_agents
        }
        yield Acting(acting, servers)
