"""Conversations in Redis (the optional `piagent[redis]` extra): shared by every piagent process.

Keys, under the `piagent:` prefix:

    c:<id>      hash    owner, agent, preview, updated_at     expires ttl after the last append
    t:<id>      list    the turns, msgpack-encoded, oldest first  (trimmed to max_turns, same expiry)
    o:<owner>   zset    the owner's conversation ids by last use  (for listing newest first)
    lru         zset    every conversation id by last use         (for the cap, the count and purging)

An append is one Lua script, so it is atomic across processes: the owner check, the push, the trim,
the expiry and the cap happen together or not at all. Redis expires the keys by itself; the store
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

from piagent.exceptions import ConversationNotFound, StoreUnavailable
from piagent.stores.base import Conversation, ConversationSummary, Cursor, Turn, preview_of

logger = logging.getLogger("piagent.stores.redis")

PREFIX = "piagent:"
_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE = msgspec.msgpack.Decoder(tuple[str, str, float, bool]).decode

# Forgets one conversation: its keys, and its entries in both indexes.
_FORGET = """
local function forget(prefix, id)
  local owner = redis.call('HGET', prefix .. 'c:' .. id, 'owner')
  if owner then redis.call('ZREM', prefix .. 'o:' .. owner, id) end
  redis.call('DEL', prefix .. 'c:' .. id, prefix .. 't:' .. id)
  redis.call('ZREM', prefix .. 'lru', id)
end
"""

# KEYS: meta, turns, owner index, lru. ARGV: id, owner, agent, now, ttl, ttl_ms, max_turns,
# max_conversations, preview, prefix, turn...  Returns 0 when the conversation is someone else's.
_APPEND = (
    _FORGET
    + """
local meta, turns, owner_index, lru = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, owner, prefix = ARGV[1], ARGV[2], ARGV[10]
local now, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local current = redis.call('HMGET', meta, 'owner', 'updated_at')
local fresh = true
if current[1] then
  if tonumber(current[2]) <= now - ttl then
    forget(prefix, id)
  elseif current[1] ~= owner then
    return 0
  else
    fresh = false
  end
end
if fresh then redis.call('HSET', meta, 'owner', owner, 'preview', ARGV[9]) end
redis.call('HSET', meta, 'agent', ARGV[3], 'updated_at', ARGV[4])
redis.call('RPUSH', turns, unpack(ARGV, 11))
redis.call('LTRIM', turns, -tonumber(ARGV[7]), -1)
redis.call('PEXPIRE', meta, ARGV[6])
redis.call('PEXPIRE', turns, ARGV[6])
redis.call('ZADD', owner_index, ARGV[4], id)
redis.call('PEXPIRE', owner_index, ARGV[6])
redis.call('ZADD', lru, ARGV[4], id)
if fresh then
  local excess = redis.call('ZCARD', lru) - tonumber(ARGV[8])
  if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', lru, 0, excess - 1)) do forget(prefix, old) end
  end
end
return 1
"""
)

# KEYS: meta, turns. ARGV: limit (0: all). Returns {} when unknown, else {owner, agent, updated_at, turn...}.
# One script instead of a MULTI pipeline: a single command to send and parse, where piagent's CPU goes.
_READ = """
local meta = redis.call('HMGET', KEYS[1], 'owner', 'agent', 'updated_at')
if not meta[1] then return {} end
local limit = tonumber(ARGV[1])
local turns = redis.call('LRANGE', KEYS[2], limit > 0 and -limit or 0, -1)
table.insert(turns, 1, meta[3])
table.insert(turns, 1, meta[2])
table.insert(turns, 1, meta[1])
return turns
"""

# KEYS: meta. ARGV: id, owner, horizon, prefix. Returns 1 when a live conversation of the owner went.
_DELETE = (
    _FORGET
    + """
local current = redis.call('HMGET', KEYS[1], 'owner', 'updated_at')
if not current[1] or current[1] ~= ARGV[2] then return 0 end
forget(ARGV[4], ARGV[1])
if tonumber(current[2]) <= tonumber(ARGV[3]) then return 0 end
return 1
"""
)

# KEYS: lru. ARGV: horizon, batch, prefix. Returns how many expired conversations went.
_PURGE = (
    _FORGET
    + """
local expired = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(expired) do forget(ARGV[3], id) end
return #expired
"""
)
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
        self._read_script = self._redis.register_script(_READ)
        self._append = self._redis.register_script(_APPEND)
        self._delete = self._redis.register_script(_DELETE)
        self._purge = self._redis.register_script(_PURGE)

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

    def _meta_key(self, conversation_id: str) -> str:
        return f"{self._prefix}c:{conversation_id}"

    def _turns_key(self, conversation_id: str) -> str:
        return f"{self._prefix}t:{conversation_id}"

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}o:{owner}"

    async def _read(self, conversation_id: str, limit: int) -> tuple[str, str, float, list[Turn]] | None:
        """(owner, agent, updated_at, the last `limit` turns, all for 0), or None for an unknown conversation."""
        keys = [self._meta_key(conversation_id), self._turns_key(conversation_id)]
        with self._translated():
            found = await self._read_script(keys=keys, args=[limit])
        if not found:
            return None
        owner, agent, updated_at, *encoded = found
        return owner.decode(), agent.decode(), float(updated_at), [Turn(*_DECODE(item)) for item in encoded]

    async def history(self, conversation_id: str, owner: str, limit: int) -> list[Turn]:
        """The last `limit` turns (oldest first); [] for an unknown or expired conversation."""
        horizon = self._clock() - self._ttl
        found = await self._read(conversation_id, max(limit, 1))
        if found is None or found[2] <= horizon:
            return []
        if found[0] != owner:
            raise ConversationNotFound(f"no conversation {conversation_id!r}")
        return found[3] if limit > 0 else []

    async def append(
        self, conversation_id: str, owner: str, turns: Sequence[Turn], max_turns: int, agent: str = ""
    ) -> None:
        """Add turns atomically (one Lua script), keep the last `max_turns`, refresh the expiry."""
        now = self._clock()
        keys = [
            self._meta_key(conversation_id),
            self._turns_key(conversation_id),
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
        args.extend(_ENCODE((t.role, t.text, t.at, t.interrupted)) for t in turns)
        with self._translated():
            stored = await self._append(keys=keys, args=args)
        if not stored:
            raise ConversationNotFound(f"no conversation {conversation_id!r}")

    async def get(self, conversation_id: str, owner: str) -> Conversation | None:
        """The whole conversation; None when unknown, expired or another owner's."""
        horizon = self._clock() - self._ttl
        found = await self._read(conversation_id, 0)
        if found is None or found[0] != owner or found[2] <= horizon:
            return None
        return Conversation(conversation_id, found[1], found[2], found[3])

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
                        pipe.hmget(self._meta_key(conversation_id), ["owner", "agent", "updated_at", "preview"])
                        pipe.llen(self._turns_key(conversation_id))
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
            deleted = await self._delete(
                keys=[self._meta_key(conversation_id)], args=[conversation_id, owner, repr(horizon), self._prefix]
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
