"""Providers from agents and settings: one object per distinct (protocol, URLs, key), servers shared by URL."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import httpx

from piagent.agents import Agents
from piagent.exceptions import SettingsError
from piagent.providers.base import Provider
from piagent.providers.common import ReplyLimits
from piagent.providers.ollama import OllamaProvider
from piagent.providers.openai import OpenAIProvider, openai_base
from piagent.providers.pool import Upstream, UpstreamPool
from piagent.providers.tooling import ToolCallLimits
from piagent.settings import Settings, split_urls


class ProviderSpec(NamedTuple):
    """What one provider object is: its protocol, its upstream URLs and its API key (agents share equal ones)."""

    kind: str
    urls: tuple[str, ...]
    api_key: str


def provider_specs(settings: Settings, agents: Agents, environ: Mapping[str, str]) -> dict[str, ProviderSpec]:
    """Each agent's provider, from its front matter with the settings as defaults; API keys read now."""
    specs: dict[str, ProviderSpec] = {}
    for agent in agents.values():
        urls = split_urls(agent.url or settings.default_urls(agent.provider))
        if agent.provider == "openai":
            urls = tuple(dict.fromkeys(openai_base(url) for url in urls))
        if agent.api_key_env:
            api_key = environ.get(agent.api_key_env, "")
            if not api_key:
                raise SettingsError(
                    f"agent {agent.name!r}: api_key_env names {agent.api_key_env}, which is not set in the environment"
                )
        else:
            api_key = settings.openai_api_key if agent.provider == "openai" else ""
        specs[agent.name] = ProviderSpec(agent.provider, urls, api_key)
    return specs


def _name_upstreams(specs: Mapping[str, ProviderSpec], settings: Settings) -> dict[tuple[str, str], Upstream]:
    """One Upstream per (protocol, URL) in use, shared by the providers that use it, so its in-flight count
    is the server's. Named after the protocol, numbered in the settings' order then the agents' when a
    protocol has several servers; never after the URL."""
    upstreams: dict[tuple[str, str], Upstream] = {}
    for kind in dict.fromkeys(spec.kind for spec in specs.values()):
        in_use = [url for spec in specs.values() if spec.kind == kind for url in spec.urls]
        defaults = split_urls(settings.default_urls(kind))
        if kind == "openai":
            defaults = tuple(openai_base(url) for url in defaults)
        ordered = [url for url in dict.fromkeys([*defaults, *in_use]) if url in in_use]
        for number, url in enumerate(ordered, start=1):
            upstreams[kind, url] = Upstream(url, kind if len(ordered) == 1 else f"{kind}#{number}")
    return upstreams


def build_providers(
    specs: Mapping[str, ProviderSpec],
    settings: Settings,
    client: httpx.AsyncClient,
    clock: Callable[[], float] = time.monotonic,
    on_error: Callable[[str, str], None] | None = None,
) -> dict[str, Provider]:
    """One provider object per distinct spec, all on the one shared client; keyed by agent name.

    `on_error(code, upstream name)` is told each upstream failure (the metrics, when they are on)."""
    upstreams = _name_upstreams(specs, settings)
    tool_limits = ToolCallLimits(settings.max_tool_calls, settings.max_tool_argument_bytes)
    limits = ReplyLimits(
        settings.max_line_bytes, settings.max_error_bytes, settings.max_reply_bytes, settings.first_token_timeout
    )
    by_spec: dict[ProviderSpec, Provider] = {}
    providers: dict[str, Provider] = {}
    for agent_name, spec in specs.items():
        provider = by_spec.get(spec)
        if provider is None:
            pool = UpstreamPool(
                [upstreams[spec.kind, url] for url in spec.urls],
                spec.kind,
                cooloff=settings.upstream_cooloff,
                clock=clock,
                on_error=on_error,
            )
            if spec.kind == "openai":
                provider = OpenAIProvider(client, pool, limits, api_key=spec.api_key, tool_limits=tool_limits)
            else:
                provider = OllamaProvider(
                    client, pool, limits, keep_alive=settings.keep_alive, api_key=spec.api_key, tool_limits=tool_limits
                )
            by_spec[spec] = provider
        providers[agent_name] = provider
    return providers
