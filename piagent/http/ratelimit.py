"""A per-caller rate limit: token buckets in a bounded table, as a pure ASGI middleware answering 429."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from piagent.exceptions import RateLimited
from piagent.http.requests import OWNER_SCOPE_KEY, route_path
from piagent.http.responses import error_response_for

# Callers remembered at most; the least recently seen is forgotten first. With API keys on there is
# one caller per key, so only an anonymous server facing many addresses ever reaches this.
MAX_CALLERS = 10_000


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class TokenBuckets:
    """`per_minute` requests a minute for each caller, in bursts of up to `per_minute`."""

    def __init__(
        self, per_minute: int, max_callers: int = MAX_CALLERS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self._capacity = float(per_minute)
        self._per_second = per_minute / 60.0
        self._max_callers = max_callers
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, caller: str) -> float:
        """Spend one request of `caller`'s allowance: 0.0 if allowed, else the seconds until it would be."""
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = _Bucket(self._capacity, now)
            if len(self._buckets) > self._max_callers:
                self._buckets.popitem(last=False)
        else:
            bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.updated) * self._per_second)
            bucket.updated = now
            self._buckets.move_to_end(caller)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._per_second


def caller_of(scope: Scope) -> str:
    """Whom a request counts against: its API key's owner, or without keys its client address."""
    owner: str | None = scope.get(OWNER_SCOPE_KEY)
    if owner:
        return owner
    client = scope.get("client")
    return f"address {client[0]}" if client else "anonymous"


class RateLimitMiddleware:
    """Answers 429 with Retry-After to a caller over its allowance; `/health` is never counted."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and route_path(scope) != "/health":
            wait = self.buckets.take(caller_of(scope))
            if wait > 0.0:
                seconds = math.ceil(wait)
                error = RateLimited(
                    f"more than {self.buckets.per_minute} requests a minute; retry in {seconds} s", seconds
                )
                await error_response_for(Request(scope), error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
