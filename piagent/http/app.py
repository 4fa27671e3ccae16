"""The app factory: builds piagent from a Settings value; its lifespan owns what it opens."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from piagent.agents import Agents, load_agents
from piagent.chat import ChatService
from piagent.exceptions import PiagentError, SettingsError, StoreUnavailable
from piagent.generations import GenerationLimiter
from piagent.hardware import Readings
from piagent.http.acting import check_agent_tools, mcp_urls, open_agent_tools
from piagent.http.auth import ApiKeyMiddleware, load_api_keys
from piagent.http.browsers import CORS, BrowserGuardMiddleware
from piagent.http.errors import (
    handle_client_disconnect,
    handle_http_exception,
    handle_piagent_error,
    handle_unexpected,
)
from piagent.http.openapi import DocumentCache
from piagent.http.page import load_chat_page
from piagent.http.ratelimit import RateLimitMiddleware, TokenBuckets
from piagent.http.recent import RecentResult
from piagent.http.requestids import RequestIdMiddleware
from piagent.http.requests import SERVER_SEND_KEY, STATE_KEY, DeepHealth, GenerationObserver, Runtime
from piagent.http.routes import build_routes
from piagent.providers.factory import ProviderSpec, build_providers, provider_specs
from piagent.schemas import AgentInfo, AgentList
from piagent.settings import Settings, split_urls
from piagent.stores import StoreFactory, store_factory
from piagent.stores.base import MemoryStore

if TYPE_CHECKING:
    from piagent.http.metrics import Metrics

Lifespan = Callable[[Starlette], Any]
logger = logging.getLogger("piagent.http.app")


async def purge_expired_forever(store: MemoryStore, interval: float) -> None:
    """Every `interval` seconds, drop expired conversations, so an idle store gives its space back too."""
    while True:
        await anyio.sleep(interval)
        try:
            await store.purge_expired()
        except StoreUnavailable:
            pass  # already logged by the store; the next round tries again
        except Exception:
            logger.exception("purging expired conversations failed")


def upstream_transport(
    settings: Settings, limits: httpx.Limits, urls: Iterable[str] | None = None
) -> httpx.AsyncBaseTransport:
    """piagent's own HTTP transport when it applies, else httpx's default one with piagent's checks.

    It applies when every upstream in use (`urls`, by default the settings' Ollama URLs) is plain http,
    with httptools importable, on an asyncio loop (uvloop or stock), unless PIAGENT_FAST_TRANSPORT is off.
    Call it from inside the running event loop.
    """
    in_use = list(split_urls(settings.ollama_url) if urls is None else urls)
    if settings.fast_transport and all(url.startswith("http://") for url in in_use):
        try:
            asyncio.get_running_loop()
            from piagent.transport import HTTPToolsTransport
        except (RuntimeError, ImportError):  # not asyncio (trio), or no httptools (PyPy): httpx's runs anywhere
            pass
        else:
            return HTTPToolsTransport(limits, settings.max_upstream_head_bytes, settings.max_upstream_headers)
    from piagent.httpx_transport import CheckedHTTPTransport

    # verify only for https: loading the CA bundle costs start-up time a plain-http upstream never uses.
    # trust_env=False: a proxy from HTTP_PROXY must never sit between piagent and a local model.
    verify = any(url.startswith("https:") for url in in_use)
    return CheckedHTTPTransport(verify=verify, limits=limits, trust_env=False)


def _lifespan(
    settings: Settings,
    agents: Agents,
    specs: Mapping[str, ProviderSpec],
    transport: httpx.AsyncBaseTransport | None,
    clock: Callable[[], float],
    upstream_clock: Callable[[], float],
    open_store: StoreFactory | None,
    home: State,
    environ: Mapping[str, str],
    machine: Readings,
    metrics: GenerationObserver | None,
) -> Lifespan:
    """The lifespan; what it opens goes to requests as lifespan state, and onto `home` (piagent's own
    `app.state`) for hosts that run the lifespan but do not pass its state on (Litestar)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        limits = httpx.Limits(
            max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections
        )
        # An injected transport wins; ours is made per lifespan, since the client closes it.
        # The model servers, and MCP servers over HTTP, share the one client: its transport must reach them all.
        urls = [*(url for spec in specs.values() for url in spec.urls), *mcp_urls(settings)]
        upstream = transport if transport is not None else upstream_transport(settings, limits, urls)
        # trust_env=False: a proxy from HTTP_PROXY must never sit between piagent and a local model.
        # verify only for https: loading the CA bundle costs start-up time a plain-http upstream never uses.
        async with httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            transport=upstream,
            trust_env=False,
            verify=any(url.startswith("https:") for url in urls),
        ) as client:
            store = open_store() if open_store is not None else None
            if store is not None and metrics is not None:
                store = metrics.observe_store(store)
            admit = machine.admit if machine.enabled else None
            limiter = GenerationLimiter(settings.max_concurrent, settings.max_queue, admit=admit)
            if metrics is not None:
                metrics.watch(limiter, machine)
            resources = AsyncExitStack()  # the agents' tools: closed after the generations are drained
            try:
                if store is not None:
                    await _check_store(store)
                on_error = metrics.upstream_error if metrics is not None else None
                providers = build_providers(specs, settings, client, upstream_clock, on_error)
                acting = await resources.enter_async_context(open_agent_tools(settings, agents, client, environ))
                chat = ChatService(
                    agents,
                    providers,
                    store,
                    limiter=limiter,
                    max_tokens=settings.max_tokens,
                    log_content=settings.log_content,
                    clock=clock,
                    acting=acting.agents,
                    mcp_tools=acting.mcp_tools,
                    max_delegation_depth=settings.delegation_max_depth,
                    on_tool=metrics.tool_call if metrics is not None else None,
                )
                deep_health: RecentResult[DeepHealth] = RecentResult(settings.deep_health_cache, upstream_clock)
                runtime = Runtime(
                    settings,
                    agents,
                    chat,
                    store,
                    build_agent_list(agents),
                    clock(),
                    client,
                    acting.mcp,
                    machine,
                    metrics,
                    deep_health,
                    DocumentCache(),
                )
                async with anyio.create_task_group() as tasks:
                    if store is not None:
                        tasks.start_soon(purge_expired_forever, store, min(settings.memory_ttl, 60.0))
                    setattr(home, STATE_KEY, runtime)
                    try:
                        yield {STATE_KEY: runtime}
                    finally:
                        delattr(home, STATE_KEY)
                        tasks.cancel_scope.cancel()
            finally:
                # Normally every generation is over by now (the piagent command drains them first); under
                # a server that cancelled its requests instead, let them unwind before the client closes.
                await limiter.drain(0)
                await resources.aclose()
                if store is not None:
                    await store.aclose()

    return lifespan


class PiagentApp(Starlette):
    """Starlette, keeping the server's own `send` in the scope (SERVER_SEND_KEY) for streamed replies' bodies."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[SERVER_SEND_KEY] = send
        await super().__call__(scope, receive, send)


class TrailingSlash:
    """Serves `/health/` as `/health` instead of redirecting: a host may hand a mounted app its path with a
    slash added and no root path (Litestar does), and Starlette's redirect would then leave the mount."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        # Not the mount's own root (`/pi/` under a root path `/pi`): that slash is what names the root.
        if len(path) > 1 and path.endswith("/") and path != scope.get("root_path", "") + "/":
            scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)


def build_agent_list(agents: Agents) -> AgentList:
    """The `GET /agents` body; agents never change after start-up, so it is built once."""
    return AgentList([AgentInfo(a.name, a.description, a.model) for a in agents.values()], agents.default)


async def _check_store(store: MemoryStore) -> None:
    """Say at start-up when the store is down; piagent serves anyway and answers 503 where it is needed."""
    try:
        await store.check()
    except StoreUnavailable as exc:
        logger.warning("%s; requests that need it get 503 until it is back", exc.message)


def _metrics(settings: Settings) -> Metrics | None:
    """The metrics when PIAGENT_METRICS is on; only then is prometheus_client imported (off costs nothing)."""
    if not settings.metrics:
        return None
    try:
        from piagent.http.metrics import Metrics
    except ImportError as exc:
        raise SettingsError(
            "PIAGENT_METRICS=true needs prometheus_client: pip install 'piagent[metrics]', or turn it off"
        ) from exc
    return Metrics()


def create_app(
    settings: Settings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    upstream_clock: Callable[[], float] = time.monotonic,
    environ: Mapping[str, str] | None = None,
    machine: Readings | None = None,
) -> Starlette:
    """Build the piagent ASGI app. Agents are read here, so a bad prompt file stops start-up at once.

    `transport` replaces the upstream HTTP transport (tests); `clock` is the wall clock memory uses;
    `upstream_clock` times the cool-off of an upstream that refused a connection and how long a deep
    health check is reused; `environ` is where
    agents' `api_key_env` variables are read (default: the process environment); `machine` reads memory and
    temperature for admission (default: Linux's own files, with the settings' limits).
    The memory store's backend is imported here too, so a missing optional extra stops start-up.
    Mounted inside another app, run `app.router.lifespan_context` from the host's lifespan (any host:
    the runtime is also kept on this app's own `state`, which requests reach whatever the host passes on).
    """
    settings = Settings.from_env() if settings is None else settings
    agents = load_agents(
        settings.prompts_dir, settings.default_agent, settings.model, settings.memory_max_turns, settings.provider
    )
    environ = os.environ if environ is None else environ
    specs = provider_specs(settings, agents, environ)
    check_agent_tools(settings, agents, environ)
    keys = load_api_keys(settings)
    # Outermost first. The browser guard before all, so another site's page or a rebound Host name
    # reaches nothing; CORS before the keys, so a browser's preflight (which never carries a key) is
    # answered and a 401 still gets the CORS headers that let the page read it; the rate limit after
    # the keys, so it counts per key.
    middleware = [
        # Outermost, so every answer (a 403 or 401 included) carries its id and gets its access line.
        Middleware(RequestIdMiddleware, access_log=settings.access_log and settings.log_format == "json"),
    ]
    metrics = _metrics(settings)
    if metrics is not None:
        from piagent.http.metrics import MetricsMiddleware

        middleware.append(Middleware(MetricsMiddleware, metrics=metrics))
    middleware += [
        Middleware(BrowserGuardMiddleware, allowed_hosts=settings.allowed_hosts, cors_origins=settings.cors_origins),
        Middleware(TrailingSlash),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORS,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Accept"],
                expose_headers=["X-Conversation-Id", "Retry-After", "X-Request-Id"],
                # Never credentials: keys travel in the Authorization header, which needs no cookie
                # mode, and `*` with credentials would let any site act as the logged-in browser.
                allow_credentials=False,
            )
        )
    if keys is not None:
        middleware.append(Middleware(ApiKeyMiddleware, keys=keys))
    if settings.rate_limit:
        middleware.append(Middleware(RateLimitMiddleware, buckets=TokenBuckets(settings.rate_limit)))
    chat_page = load_chat_page() if settings.chat_page else None
    home = State()
    app = PiagentApp(
        routes=[*build_routes(chat_page), *([metrics.route()] if metrics is not None else [])],
        middleware=middleware,
        exception_handlers={
            PiagentError: handle_piagent_error,
            HTTPException: handle_http_exception,
            ClientDisconnect: handle_client_disconnect,
            Exception: handle_unexpected,
        },
        lifespan=_lifespan(
            settings,
            agents,
            specs,
            transport,
            clock,
            upstream_clock,
            store_factory(settings, clock),
            home,
            environ,
            machine or Readings(settings.min_available_mb, settings.max_temperature_c),
            metrics,
        ),
    )
    app.state = home
    return app
