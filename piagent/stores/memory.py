"""The bounded in-process store (the default, `memory://`): capped in count and in bytes, gone with the process."""

from __future__ import annotations

import heapq
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from piagent.stores.base import Conversation, ConversationSummary, Cursor, Turn, preview_of

__all__ = ["InMemoryStore"]


# The same conversation id used under two keys is two conversations: every lookup is by (owner, id).
_Key = tuple[str, str]


def _size(turn: Turn) -> int:
    """What a turn's text costs in memory (the strings' own size, as the process holds them)."""
    size = sys.getsizeof(turn.text)
    for call in turn.tool_calls:
        size += sys.getsizeof(call.arguments)
    return size


class _Conversation:
    __slots__ = ("agent", "last_used", "preview", "size", "turns")

    def __init__(self, agent: str, preview: str, last_used: float) -> None:
        self.agent = agent
        self.preview = preview
        self.turns: list[Turn] = []
        self.size = 0  # the sum of _size over turns
        self.last_used = last_used


class InMemoryStore:
    """Bounded, in-process memory: max turns per conversation, TTL since last use, LRU caps on count and bytes.

    Every method runs without awaiting anything, so each is atomic on the event loop: no locks needed.
    Conversations are kept in last-use order, so the expired ones are always at the front and purging
    them costs nothing when there are none. Nothing survives the process.
    """

    name = "memory"
    # Every method runs to its end without awaiting, so a cancellation can never interrupt one: the chat service
    # needs no shield (an anyio cancel scope, per stored exchange) around its writes here.
    never_waits = True

    def __init__(
        self,
        ttl: float,
        max_conversations: int,
        clock: Callable[[], float] = time.time,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._ttl = ttl
        self._max = max_conversations
        self._max_bytes = max_bytes
        self._clock = clock
        self._conversations: OrderedDict[_Key, _Conversation] = OrderedDict()
        self._bytes = 0  # the text held by every conversation

    def _purge_expired(self, now: float) -> int:
        conversations = self._conversations
        purged = 0
        while conversations:
            oldest = next(iter(conversations.values()))
            if now - oldest.last_used < self._ttl:
                break
            self._forget_oldest()
            purged += 1
        return purged

    def _forget_oldest(self) -> None:
        _, gone = self._conversations.popitem(last=False)
        self._bytes -= gone.size

    def _get(self, conversation_id: str, owner: str, now: float) -> _Conversation | None:
        self._purge_expired(now)
        return self._conversations.get((owner, conversation_id))

    async def history(self, conversation_id: str, owner: str, limit: int) -> list[Turn]:
        """The last `limit` turns (oldest first); [] for an unknown or expired conversation."""
        conversation = self._get(conversation_id, owner, self._clock())
        return [] if conversation is None else conversation.turns[-limit:]

    async def append(
        self, conversation_id: str, owner: str, turns: Sequence[Turn], max_turns: int, agent: str = ""
    ) -> None:
        """Add turns, keep the last `max_turns`, move the conversation to the most recently used end."""
        now = self._clock()
        key = (owner, conversation_id)
        conversation = self._get(conversation_id, owner, now)
        if conversation is None:
            conversation = _Conversation(agent, preview_of(turns), now)
            self._conversations[key] = conversation
            while len(self._conversations) > self._max:
                self._forget_oldest()
        else:
            conversation.agent = agent
            conversation.last_used = now
            self._conversations.move_to_end(key)
        added = sum(map(_size, turns))
        conversation.turns.extend(turns)
        conversation.size += added
        self._bytes += added
        if len(conversation.turns) > max_turns:
            self._drop_turns(conversation, len(conversation.turns) - max_turns)
        # Over the byte cap: the least recently used conversations go first; this one last, oldest turns first.
        while self._bytes > self._max_bytes and len(self._conversations) > 1:
            self._forget_oldest()
        if self._bytes > self._max_bytes:
            self._drop_turns(conversation, len(conversation.turns) - len(turns))

    def _drop_turns(self, conversation: _Conversation, count: int) -> None:
        """Forget the `count` oldest turns of a conversation."""
        dropped = sum(map(_size, conversation.turns[:count]))
        del conversation.turns[:count]
        conversation.size -= dropped
        self._bytes -= dropped

    async def get(self, conversation_id: str, owner: str) -> Conversation | None:
        """The whole conversation; None when unknown, expired or another owner's."""
        self._purge_expired(self._clock())
        found = self._conversations.get((owner, conversation_id))
        if found is None:
            return None
        return Conversation(conversation_id, found.agent, found.last_used, list(found.turns))

    async def list_conversations(
        self, owner: str, limit: int, before: Cursor | None = None
    ) -> list[ConversationSummary]:
        """Up to `limit` of the owner's conversations, newest first, strictly after the `before` cursor."""
        self._purge_expired(self._clock())
        # A scan of every conversation: the store is capped (1,000 by default), and sorting by
        # (updated_at, id) rather than trusting the last-use order keeps paging exact if the wall
        # clock ever steps back.
        keys = (
            (found.last_used, conversation_id)
            for (found_owner, conversation_id), found in self._conversations.items()
            if found_owner == owner and (before is None or (found.last_used, conversation_id) < before)
        )
        page = []
        for last_used, conversation_id in heapq.nlargest(limit, keys):
            found = self._conversations[owner, conversation_id]
            page.append(ConversationSummary(conversation_id, found.agent, last_used, len(found.turns), found.preview))
        return page

    async def delete(self, conversation_id: str, owner: str) -> bool:
        """Forget a conversation; False when there was none (unknown, expired or another owner's)."""
        self._purge_expired(self._clock())
        found = self._conversations.pop((owner, conversation_id), None)
        if found is None:
            return False
        self._bytes -= found.size
        return True

    async def count(self) -> int:
        """How many live conversations are stored."""
        self._purge_expired(self._clock())
        return len(self._conversations)

    async def purge_expired(self) -> int:
        """Drop expired conversations now, so an idle server gives their memory back too."""
        return self._purge_expired(self._clock())

    async def check(self) -> None:
        """Always available: it lives in this process."""

    async def aclose(self) -> None:
        """Forget everything: nothing outlives the process in this store."""
        self._conversations.clear()
        self._bytes = 0
