"""`/metrics` in Prometheus' text format: imported only when PIAGENT_METRICS is on (the `metrics` extra).

Each app has its own registry (never prometheus_client's global one), so nothing lives at module level and
two apps in one process (tests, a host mounting piagent) count apart. Requests are counted by route
template (`/conversations/{conversation_id}`, never the id) and status; generations by agent, and tokens
by agent and owner id (a hash of the API key, never the key); upstream errors by code and upstream name
(never its URL); store calls and failures by store and operation; tool calls by tool and outcome. What is
read rather than counted (the generation slots, the machine's memory and heat) is read when Prometheus
scrapes, costing nothing per request. Every label's values are bounded: route templates, agents, owners of
configured keys, error codes, configured upstreams and tools (a tool name the agent lacks is `-`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from piagent.generations import GenerationLimiter
from piagent.hardware import Readings
from piagent.http.metrics_store import ObservedStore
from piagent.schemas import Usage
from piagent.stores.base import MemoryStore

# Seconds: a Pi's first token takes from a tenth of a second (a warm 0.5B model) to a minute (a cold load).
_FIRST_TOKEN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_REPLY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class _Readings(Collector):
    """Gauges read at scrape time: generations running and queued, the machine's memory and temperature."""

    def __init__(self) -> None:
        self.limiter: GenerationLimiter | None = None
        self.machine: Readings | None = None

    def collect(self) -> Iterator[Metric]:
        """The gauges as they are now (none before the lifespan has started)."""
        limiter = self.limiter
        if limiter is not None:
            yield GaugeMetricFamily("piagent_generations_running", "Generations holding a slot", limiter.active)
            yield GaugeMetricFamily("piagent_generations_queued", "Generations waiting for a slot", limiter.waiting)
        reading = self.machine.read() if self.machine is not None else None
        if reading is not None and reading.available_mb is not None:
            yield GaugeMetricFamily(
                "piagent_machine_available_megabytes", "MemAvailable as admission reads it", reading.available_mb
            )
        if reading is not None and reading.temperature_c is not None:
            yield GaugeMetricFamily(
                "piagent_machine_temperature_celsius", "Thermal zone 0 as admission reads it", reading.temperature_c
            )


class Metrics:
    """piagent's counters and histograms in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "piagent_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.first_token = Histogram(
            "piagent_time_to_first_token_seconds",
            "From the request to the reply's first token",
            ["agent"],
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.reply = Histogram(
            "piagent_reply_duration_seconds",
            "From the request to the reply's end",
            ["agent"],
            buckets=_REPLY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "piagent_tokens",
            "Tokens in (the prompt) and out (the reply) by agent and owner id",
            ["agent", "owner", "direction"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "piagent_upstream_errors",
            "Upstream failures by kind (piagent's error code) and upstream (its name, never its URL)",
            ["kind", "upstream"],
            registry=self.registry,
        )
        self.store_calls = Counter(
            "piagent_store_calls",
            "Memory store calls by store and operation",
            ["store", "operation"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "piagent_store_errors",
            "Memory store calls that found it unavailable, by store and operation",
            ["store", "operation"],
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "piagent_tool_calls",
            "Agents' tool calls by tool and outcome (ok, error, timeout, invalid_arguments, unknown_tool, refused)",
            ["tool", "outcome"],
            registry=self.registry,
        )
        self.readings = _Readings()
        self.registry.register(self.readings)
        # Each label set's child, looked up once: `labels()` builds and checks its key on every call.
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def count_request(self, route: str, status: str) -> None:
        """One HTTP request answered."""
        self._child(self.requests, route, status).inc()

    def watch(self, limiter: GenerationLimiter, machine: Readings | None) -> None:
        """Read these at scrape time (the lifespan hands them over once it has opened them)."""
        self.readings.limiter = limiter
        self.readings.machine = machine if machine is not None and machine.enabled else None

    def generation(self, agent: str, owner: str, first_token: float | None, total: float, usage: Usage | None) -> None:
        """One finished generation: its times in seconds, and its tokens when the reply ended whole."""
        if first_token is not None:
            self._child(self.first_token, agent).observe(first_token)
        self._child(self.reply, agent).observe(total)
        if usage is not None:
            who = owner or "-"
            self._child(self.tokens, agent, who, "in").inc(usage.prompt_tokens)
            self._child(self.tokens, agent, who, "out").inc(usage.completion_tokens)

    def upstream_error(self, kind: str, upstream: str) -> None:
        """One failure of an upstream: its error code and the upstream's name."""
        self._child(self.upstream_errors, kind, upstream).inc()

    def tool_call(self, tool: str, outcome: str) -> None:
        """One tool call of an agent's and how it went."""
        self._child(self.tool_calls, tool, outcome).inc()

    def observe_store(self, store: MemoryStore) -> MemoryStore:
        """`store`, with each call counted (and each that found it down)."""
        return ObservedStore(store, self._count_store_call, self._count_store_error)

    def _count_store_call(self, store: str, operation: str) -> None:
        self._child(self.store_calls, store, operation).inc()

    def _count_store_error(self, store: str, operation: str) -> None:
        self._child(self.store_errors, store, operation).inc()

    def route(self) -> Route:
        """`GET /metrics` (behind the API keys when they are on)."""

        async def endpoint(request: Request) -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        return Route("/metrics", endpoint, methods=["GET"])


class MetricsMiddleware:
    """Counts every HTTP request by the route it matched (its template) and the status it got."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.count = metrics.count_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router sets the route it matched on this scope; nothing matched (a 404, or a 401 before
            # routing) counts as "unmatched", so a scanner's made-up paths cannot grow the label set.
            route = getattr(scope.get("route"), "path", None)
            self.count(route or "unmatched", str(status))
