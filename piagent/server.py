"""piagent under uvicorn: a graceful shutdown that drains the running generations first; systemd notifications.

On SIGTERM (or Ctrl+C) uvicorn stops accepting, closes idle connections and waits for the busy ones;
only then does it run the lifespan shutdown, which closes the upstream client. Left alone it would
wait forever for a long generation, or with `timeout_graceful_shutdown` cancel it mid-token so
the client sees a broken transfer. So when uvicorn starts shutting down this server also drains
the generation limiter: the queue is refused at once, running generations get the grace period,
then each is ended the way its format allows (an `error` event, or an incomplete plain-text
transfer). uvicorn's own timeout stays as a backstop a few seconds later.

Under systemd (`Type=notify`) it says READY=1 once the lifespan has started and the socket is bound,
STOPPING=1 when shutdown begins, and pings the watchdog from the event loop (piagent.systemd).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import resource
import socket
from collections.abc import Awaitable, Callable

import uvicorn

from piagent.http.requests import STATE_KEY, Runtime
from piagent.protocols import Edge, EdgeLimits, with_limits
from piagent.settings import Settings
from piagent.systemd import Notifier

logger = logging.getLogger("piagent.server")

# Seconds uvicorn still waits after the grace period, for halted replies to send their last event.
BACKSTOP_SECONDS = 5.0
# Descriptors kept free beside client connections and the upstream pool: the listening socket, the event
# loop's own, a SQLite file and its journal, log files, a Redis connection.
SPARE_DESCRIPTORS = 32


def edge_protocol(limits: EdgeLimits, http: str = "auto") -> type[asyncio.Protocol]:
    """The class for uvicorn's `http=` option: httptools when installed (as uvicorn's `auto`), else h11.

    Only the chosen protocol's module (and parser) is imported.
    """
    base: type[Edge] | None = None
    if http in ("auto", "httptools"):
        try:
            from piagent.protocols_httptools import EdgeHttpToolsProtocol
        except ImportError:  # httptools is not installed (PyPy, or a source build that failed)
            if http == "httptools":
                raise
        else:
            base = EdgeHttpToolsProtocol
    if base is None:
        from piagent.protocols_h11 import EdgeH11Protocol

        base = EdgeH11Protocol
    return with_limits(base, limits)


def edge_limits(settings: Settings) -> EdgeLimits:
    """The connection limits from the settings, the connection cap lowered to fit the open-file limit.

    Past the file limit accept() fails and nobody, /health included, gets in; under the cap a new
    connection is at least answered 503 and closed, and the upstream pool always finds a descriptor.
    """
    cap = settings.max_open_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        fits = max(1, soft - settings.max_connections - SPARE_DESCRIPTORS)
        if fits < cap:
            logger.warning(
                "PIAGENT_MAX_OPEN_CONNECTIONS=%d lowered to %d to fit the open-file limit (%d)", cap, fits, soft
            )
            cap = fits
    return EdgeLimits(
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_open_connections=cap,
    )


class GracefulServer(uvicorn.Server):
    """A uvicorn Server whose shutdown drains piagent's generations within `grace` seconds."""

    def __init__(
        self,
        config: uvicorn.Config,
        grace: float,
        notifier: Notifier | None = None,
        watchdog: float | None = None,
        after_start: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(config)
        self.grace = grace
        self.notifier = notifier
        self.watchdog = watchdog if notifier is not None else None
        self.after_start = after_start
        self._watchdog_timer: asyncio.TimerHandle | None = None
        self._after_start_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's serve; the watchdog pings stop with it."""
        try:
            await super().serve(sockets)
        finally:
            if self._watchdog_timer is not None:
                self._watchdog_timer.cancel()
            if self._after_start_task is not None:
                self._after_start_task.cancel()
                await asyncio.gather(self._after_start_task, return_exceptions=True)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Run the lifespan and bind; then tell systemd piagent is ready, and start the watchdog pings."""
        await super().startup(sockets)
        if self.started:
            # What start-up built (modules, routes, agents) lives as long as the process: moved out of the cyclic
            # collector's generations, so its full collections scan only what requests create. Here rather than
            # in the app's lifespan: a host app serving piagent keeps its collector as it set it.
            gc.collect()
            gc.freeze()
        if self.started and self.notifier is not None:
            self.notifier.send(b"READY=1")
            if self.watchdog is not None:
                self._ping_watchdog(self.notifier, self.watchdog)
        if self.started and self.after_start is not None:
            # Beside serving, never before it: a slow model server must not delay READY or the first request.
            self._after_start_task = asyncio.ensure_future(self._run_after_start(self.after_start))

    @staticmethod
    async def _run_after_start(after_start: Callable[[], Awaitable[None]]) -> None:
        try:
            await after_start()
        except Exception:  # a start-up report that fails must never stop the server
            logger.exception("the start-up check failed")

    def _ping_watchdog(self, notifier: Notifier, interval: float) -> None:
        # A timer on the event loop itself: a blocked loop stops pinging, and systemd restarts piagent.
        notifier.send(b"WATCHDOG=1")
        loop = asyncio.get_running_loop()
        self._watchdog_timer = loop.call_later(interval, self._ping_watchdog, notifier, interval)

    def runtime(self) -> Runtime | None:
        """What piagent's lifespan opened (its shared upstream client among it), once it has started."""
        # The lifespan state is the dict this server handed the app's lifespan (the ASGI lifespan
        # "state" extension); piagent's lifespan put its Runtime there.
        state = getattr(getattr(self, "lifespan", None), "state", None) or {}
        runtime: Runtime | None = state.get(STATE_KEY)
        return runtime

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Start draining, then let uvicorn stop accepting and wait for the connections to finish."""
        if self.notifier is not None:
            self.notifier.send(b"STOPPING=1")
        runtime = self.runtime()
        limiter = runtime.chat.limiter if runtime is not None else None
        if limiter is None:
            await super().shutdown(sockets)
            return
        if limiter.active or limiter.waiting:
            logger.info(
                "Draining %d generation(s) (%d queued are refused); %g s grace",
                limiter.active,
                limiter.waiting,
                self.grace,
            )
        drain = asyncio.ensure_future(limiter.drain(self.grace))
        try:
            await super().shutdown(sockets)
        finally:
            if not drain.done():
                drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)


def build_server(
    config: uvicorn.Config,
    grace: float,
    notifier: Notifier | None = None,
    watchdog: float | None = None,
    after_start: Callable[[], Awaitable[None]] | None = None,
) -> GracefulServer:
    """A GracefulServer whose uvicorn backstop comes `BACKSTOP_SECONDS` after the grace period.

    With a `notifier` it tells systemd READY and STOPPING, and pings its watchdog every `watchdog` seconds;
    `after_start` runs once in the background when serving has begun (the CLI's model server check).
    """
    config.timeout_graceful_shutdown = math.ceil(grace + BACKSTOP_SECONDS)
    return GracefulServer(config, grace, notifier, watchdog, after_start)
