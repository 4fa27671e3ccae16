"""Conversations in Redis (the optional `piagent[redis]` extra): shared by every piagent process.

Keys, under the `piagent:` prefix, where a conversation is named `<owner>:<id>` (the same id used
under two API keys is two conversations; an owner id never holds a colon):

    c:<owner>:<id>  hash    owner, agent, preview, updated_at     expires ttl after the last append
    t:<owner>:<id>  list    the turns, msgpack-encoded, oldest first  (trimmed to max_turns, same expiry)
    o:<owner>       zset    the owner's conversation ids by last use  (for listing newest first)
    lru             zset    every `<owner>:<id>` by last use          (for the cap, the count and purging)
    schema          string  the key layout's version (2); layout 1 named conversations by id alone

An append is one Lua script, so it is atomic across processes: the push, the trim, the expiry and the
cap happen together or not at all. Keys of layout 1 are renamed to layout 2 once, on first use.
Redis expires the keys by itself; the store
also compares `updated_at` with its injected clock, so expiry means exactly the same as in the other
backends (and tests can move time). Keep the hosts' clocks in sync (NTP) when several share one Redis.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import msgspec
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from piagent.exceptions import StoreUnavailable
from piagent.stores import redis_scripts as scripts
from piagent.stores.base import Conversation, ConversationSummary, Cursor, ToolCallRecord, Turn, preview_of

logger = logging.getLogger("piagent.stores.redis")

PREFIX = "piagent:"
LAYOUT = "2"


class _StoredTurn(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True, gc=False):
    """A turn as Redis keeps it: a msgpack array; layout 1's four fields decode as they are."""

    role: str
    text: str
    at: float
    interrupted: bool
    tool_calls: tuple[ToolCallRecord, ...] = ()
    tool_call_id: str = ""
    name: str = ""


_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE = msgspec.msgpack.Decoder(_StoredTurn).decode

_PURGE_BATCH = 500


class RedisStore:
    """The MemoryStore in Redis; an unreachable server makes it unavailable (503), never a lost write."""

    name = "redis"

    def __init__(
        self,
        url: str,
        ttl: float,
        max_conversations: int,
        clock: Callable[[], float] = time.time,
        *,
        max_connections: int = 16,
        prefix: str = PREFIX,
    ) -> None:
        self._ttl = ttl
        self._max = max_conversations
        self._clock = clock
        self._prefix = prefix
        # A bounded pool that waits for a free connection, short timeouts and a single retry (for a
        # pooled connection that died with a Redis restart): a store that is down answers 503 in
        # seconds instead of after redis-py's ten retries. Query arguments in the URL win over these.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=5.0,
            socket_connect_timeout=3.0,
            socket_timeout=5.0,
            retry=Retry(NoBackoff(), 1),
        )
        self._redis = Redis.from_pool(pool)
        self._read_script = self._redis.register_script(scripts.READ)
        self._append = self._redis.register_script(scripts.APPEND)
        self._delete = self._redis.register_script(scripts.DELETE)
        self._purge = self._redis.register_script(scripts.PURGE)
        self._migrate = self._redis.register_script(scripts.MIGRATE)
        self._layout_checked = False

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Any Redis failure becomes StoreUnavailable; the reason never carries the URL or a password."""
        try:
            yield
        except RedisError as exc:
            if isinstance(exc, AuthenticationError):
                reason = "authentication failed"
            elif isinstance(exc, RedisTimeoutError):
                reason = "timed out"
            elif isinstance(exc, RedisConnectionError):
                reason = "cannot connect"
            else:
                reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            logger.warning("redis store failed: %r", exc)
            raise StoreUnavailable(self.name, reason) from exc

    async def _ready(self) -> None:
        """Bring keys of layout 1 to layout 2 once (idempotent, so processes may race; called translated)."""
        if self._layout_checked:
            return
        schema = f"{self._prefix}schema"
        if await self._redis.get(schema) != LAYOUT.encode():
            start = len(self._prefix) + 2
            async for key in self._redis.scan_iter(match=f"{self._prefix}c:*", count=500):
                conversation_id = key.decode()[start:]
                if ":" not in conversation_id:
                    await self._migrate(args=[self._prefix, conversation_id])
            lru = f"{self._prefix}lru"
            members = cast("list[bytes]", await self._redis.zrange(lru, 0, -1))
            stale = [m for m in members if b":" not in m]
            if stale:
                await self._redis.zrem(lru, *stale)  # layout 1 entries whose keys had expired
            await self._redis.set(schema, LAYOUT)
            logger.info("redis store: key layout %s", LAYOUT)
        self._layout_checked = True

    def _meta_key(self, owner: str, conversation_id: str) -> str:
        return f"{self._prefix}c:{owner}:{conversation_id}"

    def _turns_key(self, owner: str, conversation_id: str) -> str:
        return f"{self._prefix}t:{owner}:{conversation_id}"

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}o:{owner}"

    async def _read(self, owner: str, conversation_id: str, limit: int) -> tuple[str, float, list[Turn]] | None:
        """(agent, updated_at, the last `limit` turns, all for 0), or None for an unknown conversation."""
        keys = [self._meta_key(owner, conversation_id), self._turns_key(owner, conversation_id)]
        with self._translated():
            await self._ready()
            found = await self._read_script(keys=keys, args=[limit])
        if not found:
            return None
        _, agent, updated_at, *encoded = found
        return agent.decode(), float(updated_at), [Turn(*msgspec.structs.astuple(_DECODE(item))) for item in encoded]

    async def history(self, conversation_id: str, owner: str, limit: int) -> list[Turn]:
        """The last `limit` turns (oldest first); [] for an unknown or expired conversation."""
        horizon = self._clock() - self._ttl
        found = await self._read(owner, conversation_id, max(limit, 1))
        if found is None or found[1] <= horizon:
            return []
        return found[2] if limit > 0 else []

    async def append(
        self, conversation_id: str, owner: str, turns: Sequence[Turn], max_turns: int, agent: str = ""
    ) -> None:
        """Add turns atomically (one Lua script), keep the last `max_turns`, refresh the expiry."""
        now = self._clock()
        keys = [
            self._meta_key(owner, conversation_id),
            self._turns_key(owner, conversation_id),
            self._owner_key(owner),
            f"{self._prefix}lru",
        ]
        args: list[Any] = [
            conversation_id,
            owner,
            agent,
            repr(now),
            repr(self._ttl),
            max(1, round(self._ttl * 1000)),
            max_turns,
            self._max,
            preview_of(turns),
            self._prefix,
        ]
        args.extend(_ENCODE(_StoredTurn(*msgspec.structs.astuple(t))) for t in turns)
        with self._translated():
            await self._ready()
            await self._append(keys=keys, args=args)

    async def get(self, conversation_id: str, owner: str) -> Conversation | None:
        """The whole conversation; None when unknown, expired or another owner's."""
        horizon = self._clock() - self._ttl
        found = await self._read(owner, conversation_id, 0)
        if found is None or found[1] <= horizon:
            return None
        return Conversation(conversation_id, *found)

    async def list_conversations(
        self, owner: str, limit: int, before: Cursor | None = None
    ) -> list[ConversationSummary]:
        """Up to `limit` of the owner's conversations, newest first, strictly after the `before` cursor."""
        horizon = self._clock() - self._ttl
        index = self._owner_key(owner)
        high = "+inf" if before is None else repr(before[0])
        page: list[ConversationSummary] = []
        stale: list[str] = []
        offset, batch = 0, limit + 1
        with self._translated():
            await self._ready()
            while len(page) < limit:
                entries = cast(
                    "list[tuple[bytes, float]]",
                    await self._redis.zrange(
                        index, high, f"({horizon!r}", desc=True, byscore=True, offset=offset, num=batch, withscores=True
                    ),
                )
                # Ties on the time are ordered by id, as Redis orders equal scores (bytewise).
                ids = [m.decode() for m, score in entries if before is None or (score, m.decode()) < before]
                async with self._redis.pipeline(transaction=False) as pipe:
                    for conversation_id in ids:
                        pipe.hmget(self._meta_key(owner, conversation_id), ["owner", "agent", "updated_at", "preview"])
                        pipe.llen(self._turns_key(owner, conversation_id))
                    replies = await pipe.execute()
                for i, conversation_id in enumerate(ids):
                    (found_owner, agent, updated_at, preview), turns = replies[2 * i], replies[2 * i + 1]
                    if found_owner is None or found_owner.decode() != owner or float(updated_at) <= horizon:
                        stale.append(conversation_id)  # its keys expired before the index entry went
                    elif len(page) < limit:
                        page.append(
                            ConversationSummary(
                                conversation_id, agent.decode(), float(updated_at), turns, preview.decode()
                            )
                        )
                if len(entries) < batch:
                    break
                offset += batch
            if stale:
                await self._redis.zrem(index, *stale)
        return page

    async def delete(self, conversation_id: str, owner: str) -> bool:
        """Forget a conversation; False when there was none (unknown, expired or another owner's)."""
        horizon = self._clock() - self._ttl
        with self._translated():
            await self._ready()
            deleted = await self._delete(
                keys=[self._meta_key(owner, conversation_id)],
                args=[f"{owner}:{conversation_id}", repr(horizon), self._prefix],
            )
        return bool(deleted)

    async def count(self) -> int:
        """How many live conversations are stored, for every owner."""
        horizon = self._clock() - self._ttl
        with self._translated():
            found: int = await self._redis.zcount(f"{self._prefix}lru", f"({horizon!r}", "+inf")
        return found

    async def purge_expired(self) -> int:
        """Forget the expired conversations' index entries (Redis has usually dropped their keys already)."""
        horizon = self._clock() - self._ttl
        purged = 0
        with self._translated():
            while True:
                went = int(
                    await self._purge(keys=[f"{self._prefix}lru"], args=[repr(horizon), _PURGE_BATCH, self._prefix])
                )
                purged += went
                if went < _PURGE_BATCH:
                    return purged

    async def check(self) -> None:
        """One PING."""
        with self._translated():
            await self._redis.ping()

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._redis.aclose()
