"""Choosing the conversation store from `PIAGENT_MEMORY_URL`; a backend is imported only when chosen."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from piagent.exceptions import SettingsError
from piagent.settings import Settings
from piagent.stores.base import MemoryStore
from piagent.stores.memory import InMemoryStore

StoreFactory = Callable[[], MemoryStore]


def sqlite_path(url: str) -> str:
    """The file a `sqlite:///` URL names: `sqlite:///rel.db` is relative, `sqlite:////abs.db` absolute."""
    return url.partition("://")[2][1:]


def store_factory(settings: Settings, clock: Callable[[], float] = time.time) -> StoreFactory | None:
    """What the lifespan calls to open the configured store; None when memory is off.

    The backend module is imported here, at app creation, so a missing optional extra stops start-up
    with one clear line instead of failing the first request.
    """
    if not settings.memory_enabled:
        return None
    url = settings.memory_url
    scheme = url.partition("://")[0].lower()
    ttl, cap = settings.memory_ttl, settings.memory_max_conversations
    if scheme == "memory":
        return partial(InMemoryStore, ttl, cap, clock, settings.memory_max_bytes)
    if scheme == "sqlite":
        from piagent.stores.sqlite import SQLiteStore

        return partial(SQLiteStore, sqlite_path(url), ttl, cap, clock)
    try:
        from piagent.stores.redis import RedisStore
    except ModuleNotFoundError as exc:
        if exc.name != "redis" and not (exc.name or "").startswith("redis."):
            raise
        raise SettingsError(
            "PIAGENT_MEMORY_URL is a redis:// URL but the redis package is not installed: "
            "install piagent with its redis extra, pip install 'piagent[redis]'"
        ) from exc
    return partial(RedisStore, url, ttl, cap, clock, max_connections=settings.max_connections)
