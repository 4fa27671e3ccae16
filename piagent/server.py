"""piagent under uvicorn, with a graceful shutdown that drains the running generations first.

On SIGTERM (or Ctrl+C) uvicorn stops accepting, closes idle connections and waits for the busy ones;
only then does it run the lifespan shutdown, which closes the upstream client. Left alone it would
wait forever for a long generation, or with `timeout_graceful_shutdown` cancel it mid-token so
the client sees a broken transfer. So when uvicorn starts shutting down this server also drains
the generation limiter: the queue is refused at once, running generations get the grace period,
then each is ended the way its format allows (an `error` event, or an incomplete plain-text
transfer). uvicorn's own timeout stays as a backstop a few seconds later.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket

import uvicorn

from piagent.http.requests import STATE_KEY, Runtime

logger = logging.getLogger("piagent.server")

# Seconds uvicorn still waits after the grace period, for halted replies to send their last event.
BACKSTOP_SECONDS = 5.0


class GracefulServer(uvicorn.Server):
    """A uvicorn Server whose shutdown drains piagent's generations within `grace` seconds."""

    def __init__(self, config: uvicorn.Config, grace: float) -> None:
        super().__init__(config)
        self.grace = grace

    def _runtime(self) -> Runtime | None:
        # The lifespan state is the dict this server handed the app's lifespan (the ASGI lifespan
        # "state" extension); piagent's lifespan put its Runtime there.
        state = getattr(getattr(self, "lifespan", None), "state", None) or {}
        runtime: Runtime | None = state.get(STATE_KEY)
        return runtime

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Start draining, then let uvicorn stop accepting and wait for the connections to finish."""
        runtime = self._runtime()
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


def build_server(config: uvicorn.Config, grace: float) -> GracefulServer:
    """A GracefulServer whose uvicorn backstop comes `BACKSTOP_SECONDS` after the grace period."""
    config.timeout_graceful_shutdown = math.ceil(grace + BACKSTOP_SECONDS)
    return GracefulServer(config, grace)
