"""One result shared by concurrent callers and reused for a short while (`/health?deep=1`'s checks)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class RecentResult(Generic[T]):
    """The result of `compute()`, reused for `ttl` seconds; callers arriving while it runs wait for that run.

    So a caller repeating a costly check (every upstream asked, the store pinged) costs at most one
    check per `ttl`, however many requests it sends. A run that fails is not kept: the next caller
    runs it again (the callers that waited on it too).
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._value: T | None = None
        self._at = 0.0
        self._runs = 0  # completed runs: a waiter takes the value of the run it waited for
        self._running: anyio.Event | None = None

    async def get(self, compute: Callable[[], Awaitable[T]]) -> T:
        """The recent result, or the one of the run in flight, or a new run's."""
        while True:
            if self._runs and self._clock() - self._at < self._ttl:
                return self._value  # type: ignore[return-value]
            running = self._running
            if running is None:
                break
            runs = self._runs
            await running.wait()
            if self._runs != runs:
                return self._value  # type: ignore[return-value]
        running = self._running = anyio.Event()
        try:
            value = await compute()
            self._value, self._at = value, self._clock()
            self._runs += 1
            return value
        finally:
            self._running = None
            running.set()
