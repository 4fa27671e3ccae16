"""`piagent check`: settings, agents, model server, memory store and MCP servers, one line per problem with its fix."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import NamedTuple, TextIO

import httpx

from piagent.agents import Agent, Agents, load_agents, tool_names
from piagent.exceptions import AgentDefinitionError, PiagentError, SettingsError, UpstreamTimeout, UpstreamUnavailable
from piagent.http.acting import check_agent_tools
from piagent.http.browsers import AllowedHosts
from piagent.providers.factory import ProviderSpec, provider_specs
from piagent.providers.ollama import OllamaProvider, model_key
from piagent.providers.openai import OpenAIProvider
from piagent.providers.pool import UpstreamPool
from piagent.settings import Settings, mask_secret, split_urls
from piagent.stores import store_factory
from piagent.version import __version__

# How long the model server gets to answer a check: it answers these from memory, but a Pi that is
# loading a model can be slow.
_READ_TIMEOUT = 10.0


class Problem(NamedTuple):
    """Something that keeps piagent from answering, and what to do about it."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}: {self.fix}"


class Report:
    """What a check found: lines for the person reading, and the problems."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.problems: list[Problem] = []

    def say(self, line: str) -> None:
        """Add a line of the report."""
        self.lines.append(line)

    def problem(self, what: str, fix: str) -> None:
        """Add a problem and its fix."""
        self.problems.append(Problem(what, fix))


def _size(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def check_settings(settings: Settings, report: Report) -> None:
    """List every setting as resolved, secrets masked."""
    env_file = os.environ.get("PIAGENT_CONFIG") or ("config.env" if Path("config.env").is_file() else None)
    source = f"{env_file}, then the environment" if env_file else "the environment (no config.env here)"
    report.say(f"Settings, from {source}:")
    report.lines.extend(f"  {key}={value}" for key, value in settings.describe())


def check_agents(settings: Settings, report: Report) -> Agents | None:
    """Load the agents as the server would; None (and a problem) when they do not load."""
    try:
        agents = load_agents(
            settings.prompts_dir, settings.default_agent, settings.model, settings.memory_max_turns, settings.provider
        )
    except AgentDefinitionError as exc:
        report.problem(exc.message, f"fix that file, or move it out of {settings.prompts_dir}")
        return None
    except SettingsError as exc:
        report.problem(exc.message, "change it in config.env or the environment")
        return None
    report.say(f"\nAgents, from {settings.prompts_dir} (default: {agents.default}):")
    width = max(len(name) for name in agents)
    report.lines.extend(
        f"  {agent.name:<{width}}  {agent.model}" + ("" if agent.provider == "ollama" else f"  ({agent.provider})")
        for agent in agents.values()
    )
    return agents


async def check_upstream(
    settings: Settings,
    agents: Agents | None,
    report: Report,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    client: httpx.AsyncClient | None = None,
) -> None:
    """Is every model server the agents use there, which version, and does it have every agent's model?

    Without agents (their files did not load), the settings' server for `PIAGENT_PROVIDER` is checked.
    It asks through `client` (left open) when given, else through a client of its own on `transport`.
    """
    groups: dict[ProviderSpec, list[Agent]] = {}
    if agents is None:
        groups[ProviderSpec(settings.provider, split_urls(settings.default_urls(settings.provider)), "")] = []
    else:
        try:
            specs = provider_specs(settings, agents, os.environ)
        except SettingsError as exc:  # an agent's api_key_env names a variable that is not set
            report.problem(exc.message, "export it before starting piagent, or remove api_key_env")
            return
        for agent in agents.values():
            groups.setdefault(specs[agent.name], []).append(agent)
    if client is not None:
        await _check_groups(client, groups, report)
        return
    timeout = httpx.Timeout(_READ_TIMEOUT, connect=settings.connect_timeout)
    verify = any(url.startswith("https:") for spec in groups for url in spec.urls)
    async with httpx.AsyncClient(timeout=timeout, transport=transport, trust_env=False, verify=verify) as own:
        await _check_groups(own, groups, report)


async def _check_groups(client: httpx.AsyncClient, groups: dict[ProviderSpec, list[Agent]], report: Report) -> None:
    for spec, users in groups.items():
        own = [agent.name for agent in users if agent.url]
        setting = f"fix `url:` of agent {', '.join(map(repr, own))}" if own else _URL_KEYS[spec.kind]
        for url in spec.urls:
            if spec.kind == "openai":
                await _check_openai(client, url, spec.api_key, users, setting, report)
            else:
                await _check_ollama(client, url, spec.api_key, users, setting, report)


# The setting to change when the settings' own server is the one at fault.
_URL_KEYS = {"ollama": "set PIAGENT_OLLAMA_URL", "openai": "set PIAGENT_OPENAI_URL"}


async def _check_ollama(
    client: httpx.AsyncClient, base: str, api_key: str, users: list[Agent], setting: str, report: Report
) -> None:
    url = mask_secret("PIAGENT_OLLAMA_URL", base)
    provider = OllamaProvider(client, UpstreamPool.from_urls("ollama", [base]), api_key=api_key)
    try:
        version = await provider.version(_READ_TIMEOUT)
        models = await provider.list_models(_READ_TIMEOUT)
    except UpstreamUnavailable:
        report.say(f"\nModel server: ollama at {url}: not reachable")
        report.problem(f"ollama is not reachable at {url}", f"start it with `ollama serve` or {setting}")
        return
    except UpstreamTimeout:
        report.say(f"\nModel server: ollama at {url}: no answer")
        report.problem(
            f"ollama at {url} did not answer within {_READ_TIMEOUT:g} s",
            "check that it is not stuck (`journalctl -u ollama`) and that the machine is not out of memory",
        )
        return
    except PiagentError as exc:
        report.say(f"\nModel server: ollama at {url}: not answering like Ollama")
        report.problem(
            f"{url} does not answer like Ollama ({exc.message})",
            f"{setting} to the Ollama server's address (port 11434 by default)",
        )
        return
    report.say(f"\nModel server: ollama {version or '(version unknown)'} at {url}")
    pulled = {model_key(model.name): model for model in models}
    for model, names in _models_of(users).items():
        found = pulled.get(model_key(model))
        if found is not None:
            report.say(f"  {model}: pulled ({_size(found.size)})")
            continue
        whose = ("agent " if len(names) == 1 else "agents ") + ", ".join(repr(name) for name in names)
        report.say(f"  {model}: not pulled")
        report.problem(f"model {model!r} of {whose} is not pulled", f"run `ollama pull {model}`")


async def _check_openai(
    client: httpx.AsyncClient, base: str, api_key: str, users: list[Agent], setting: str, report: Report
) -> None:
    url = mask_secret("PIAGENT_OPENAI_URL", base)
    provider = OpenAIProvider(client, UpstreamPool.from_urls("openai", [base]), api_key=api_key)
    try:
        served = await provider.list_models(_READ_TIMEOUT)
    except UpstreamUnavailable:
        report.say(f"\nModel server: openai-compatible at {url}: not reachable")
        report.problem(
            f"the OpenAI-compatible server is not reachable at {url}",
            f"start it (llama-server, LM Studio, vLLM, ...) or {setting}",
        )
        return
    except PiagentError as exc:
        report.say(f"\nModel server: openai-compatible at {url}: not answering like one")
        report.problem(f"{url} does not answer like an OpenAI-compatible server ({exc.message})", setting)
        return
    report.say(f"\nModel server: openai-compatible at {url}, serving {', '.join(served) or 'no model it names'}")
    for model in _models_of(users):
        # Informational only: llama.cpp's server, for one, answers for its one model under any name.
        listed = "listed" if model in served else "not listed by the server (some serve any name)"
        report.say(f"  {model}: {listed}")


def _models_of(users: list[Agent]) -> dict[str, list[str]]:
    """Each model these agents use, with the names of the agents that use it."""
    models: dict[str, list[str]] = {}
    for agent in users:
        models.setdefault(agent.model, []).append(agent.name)
    return models


async def check_store(settings: Settings, report: Report) -> None:
    """Can the memory store serve reads and writes (a store in this process always can)?"""
    try:
        open_store = store_factory(settings)
    except SettingsError as exc:  # e.g. a redis:// URL without the redis extra installed
        report.problem(exc.message, "install it, or change PIAGENT_MEMORY_URL")
        return
    if open_store is None:
        report.say("\nMemory: off (PIAGENT_MEMORY_ENABLED=false): every message starts a new conversation")
        return
    where = mask_secret("PIAGENT_MEMORY_URL", settings.memory_url)
    store = open_store()
    try:
        await store.check()
    except PiagentError as exc:
        report.say(f"\nMemory store: {store.name} at {where}: not reachable")
        report.problem(exc.message, f"start {store.name}, or change PIAGENT_MEMORY_URL")
        return
    finally:
        await store.aclose()
    if store.name == "memory":
        report.say("\nMemory store: in this process, nothing to reach (conversations end when piagent stops)")
    else:
        report.say(f"\nMemory store: {store.name} at {where}, reachable")


async def check_mcp(settings: Settings, report: Report) -> None:
    """Does each MCP server of PIAGENT_MCP_FILE start (or answer at its URL), and with which tools?"""
    if not settings.mcp_file:
        return
    # Only with an MCP file: piagent without one never imports the MCP client.
    from piagent.mcp import McpServers

    async with httpx.AsyncClient(trust_env=False) as client:
        try:
            servers = McpServers.from_settings(settings, client, os.environ)
        except SettingsError as exc:
            report.problem(exc.message, "fix the file, or leave PIAGENT_MCP_FILE empty")
            return
        try:
            tools = await servers.tools()
            statuses = servers.status()
        finally:
            await servers.aclose()
    report.say(f"\nMCP servers ({settings.mcp_file}):")
    for status in statuses:
        names = [tool.name for tool in tools if tool.server.name == status.name]
        if status.state == "ok":
            report.say(f"  {status.name} ({status.transport}): {len(names)} tools: {', '.join(names)}")
            continue
        report.say(f"  {status.name} ({status.transport}): not working")
        report.problem(
            f"mcp server {status.name!r}: {status.last_error}",
            "fix its `command` or `url` in PIAGENT_MCP_FILE (run the command by hand to see its own error)",
        )


def _page_host(settings: Settings) -> str:
    """The name a browser reaches piagent by: the address it listens on, or on every one the mDNS name."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        return f"{socket.gethostname()}.local"
    return f"[{host}]" if ":" in host else host


def _page_hint(settings: Settings) -> str:
    host = _page_host(settings)
    page = f" and open http://{host}:{settings.port}/ in a browser"
    if not AllowedHosts(settings.allowed_hosts).allows(host):
        page += f" (set PIAGENT_ALLOWED_HOSTS={host} first: piagent answers only to the names listed there)"
    return page


def check_tools(settings: Settings, agents: Agents | None, report: Report) -> None:
    """Which tools each agent acts with, and whether each is there and usable, as start-up would find."""
    acting = [agent for agent in (agents or {}).values() if agent.tools or agent.delegates or agent.mcp]
    if agents is None or not acting:
        return
    report.say("\nTools:")
    for agent in acting:
        report.say(f"  {agent.name}: {', '.join(tool_names(agent))}")
    try:
        check_agent_tools(settings, agents, os.environ)
    except PiagentError as exc:
        report.problem(exc.message, "fix the agent's tools: line or that tool's settings (`piagent tools` lists them)")


async def _run(settings: Settings, transport: httpx.AsyncBaseTransport | None) -> Report:
    report = Report()
    check_settings(settings, report)
    agents = check_agents(settings, report)
    check_tools(settings, agents, report)
    await check_upstream(settings, agents, report, transport)
    await check_store(settings, report)
    await check_mcp(settings, report)
    return report


def check(settings: Settings, out: TextIO, err: TextIO, transport: httpx.AsyncBaseTransport | None = None) -> int:
    """Run every check, print the report to `out` and the problems to `err`; 0 when there are none, else 1."""
    report = asyncio.run(_run(settings, transport))
    print(f"piagent {__version__}", file=out)
    for line in report.lines:
        print(line, file=out)
    if report.problems:
        count = len(report.problems)
        print(f"\n{count} problem{'s' * (count != 1)}:", file=err)
        for problem in report.problems:
            print(problem, file=err)
        return 1
    page = _page_hint(settings) if settings.chat_page else ""
    print(f"\nAll good: start the server with `piagent`{page}.", file=out)
    return 0
