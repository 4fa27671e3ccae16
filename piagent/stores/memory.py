"""The bounded in-process store (the default, `memory://`): slots only, gone with the process."""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from piagent.exceptions import ConversationNotFound
from piagent.stores.base import Conversation, ConversationSummary, Cursor, Turn, preview_of

__all__ = ["InMemoryStore"]


class _Conversation:
    __slots__ = ("agent", "last_used", "owner", "preview", "turns")

    def __init__(self, owner: str, agent: str, preview: str, turns: list[Turn], last_used: float) -> None:
        self.owner = owner
        self.agent = agent
        self.preview = preview
        self.turns = turns
        self.last_used = last_used


class InMemoryStore:
    """Bounded, in-process memory: max turns per conversation, TTL since last use, LRU cap on the count.

    Every method runs without awaiting anything, so each is atomic on the event loop: no locks needed.
    Conversations are kept in last-use order, so the expired ones are always at the front and purging
    them costs nothing when there are none. Nothing survives the process.
    """

    name = "memory"

    def __init__(self, ttl: float, max_conversations: int, clock: Callable[[], float] = time.time) -> None:
        self._ttl = ttl
        self._max = max_conversations
        self._clock = clock
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()

    def _purge_expired(self, now: float) -> int:
        conversations = self._conversations
        purged = 0
        while conversations:
            oldest = next(iter(conversations.values()))
            if now - oldest.last_used < self._ttl:
                break
            conversations.popitem(last=False)
            purged += 1
        return purged

    def _get(self, conversation_id: str, owner: str, now: float) -> _Conversation | None:
        self._purge_expired(now)
        conversation = self._conversations.get(conversation_id)
        if conversation is not None and conversation.owner != owner:
            raise ConversationNotFound(f"no conversation {conversation_id!r}")
        return conversation

    async def history(self, conversation_id: str, owner: str, limit: int) -> list[Turn]:
        """The last `limit` turns (oldest first); [] for an unknown or expired conversation."""
        conversation = self._get(conversation_id, owner, self._clock())
        return [] if conversation is None else conversation.turns[-limit:]

    async def append(
        self, conversation_id: str, owner: str, turns: Sequence[Turn], max_turns: int, agent: str = ""
    ) -> None:
        """Add turns, keep the last `max_turns`, move the conversation to the most recently used end."""
        now = self._clock()
        conversation = self._get(conversation_id, owner, now)
        if conversation is None:
            conversation = _Conversation(owner, agent, preview_of(turns), list(turns), now)
            self._conversations[conversation_id] = conversation
            while len(self._conversations) > self._max:
                self._conversations.popitem(last=False)
        else:
            conversation.turns.extend(turns)
            conversation.agent = agent
            conversation.last_used = now
            self._conversations.move_to_end(conversation_id)
        if len(conversation.turns) > max_turns:
            del conversation.turns[:-max_turns]

    async def get(self, conversation_id: str, owner: str) -> Conversation | None:
        """The whole conversation; None when unknown, expired or another owner's."""
        self._purge_expired(self._clock())
        found = self._conversations.get(conversation_id)
        if found is None or found.owner != owner:
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
            for conversation_id, found in self._conversations.items()
            if found.owner == owner and (before is None or (found.last_used, conversation_id) < before)
        )
        page = []
        for last_used, conversation_id in heapq.nlargest(limit, keys):
            found = self._conversations[conversation_id]
            page.append(ConversationSummary(conversation_id, found.agent, last_used, len(found.turns), found.preview))
        return page

    async def delete(self, conversation_id: str, owner: str) -> bool:
        """Forget a conversation; False when there was none (unknown, expired or another owner's)."""
        self._purge_expired(self._clock())
        found = self._conversations.get(conversation_id)
        if found is None or found.owner != owner:
            return False
        del self._conversations[conversation_id]
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
