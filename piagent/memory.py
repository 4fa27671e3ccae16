"""Conversation memory: the store contract and the bounded in-process store (the default)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

import msgspec

from piagent.exceptions import RequestError

USER = "user"
ASSISTANT = "assistant"


class ConversationNotFound(RequestError):
    """The conversation id belongs to someone else (or, where ids must exist, to nobody)."""

    code = "conversation_not_found"
    status_code = 404


class Turn(msgspec.Struct, frozen=True, gc=False):
    """One message of a conversation; `interrupted` marks a reply cut short by the client leaving."""

    role: str
    text: str
    at: float
    interrupted: bool = False


class MemoryStore(Protocol):
    """Where conversations live between requests."""

    name: str

    async def history(self, conversation_id: str, owner: str, limit: int) -> list[Turn]:
        """The last `limit` turns (oldest first); [] for an unknown or expired conversation."""

    async def append(self, conversation_id: str, owner: str, turns: Sequence[Turn], max_turns: int) -> None:
        """Add turns atomically, keep the last `max_turns`, and mark the conversation used now."""

    async def count(self) -> int:
        """How many conversations are stored (expired ones may still count until purged)."""

    async def aclose(self) -> None:
        """Release what the store holds open."""


class _Conversation:
    __slots__ = ("last_used", "owner", "turns")

    def __init__(self, owner: str, turns: list[Turn], last_used: float) -> None:
        self.owner = owner
        self.turns = turns
        self.last_used = last_used


class InMemoryStore:
    """Bounded, in-process memory: max turns per conversation, TTL since last use, LRU cap on the count.

    Every method runs without awaiting anything, so each is atomic on the event loop: no locks needed.
    Conversations are kept in last-use order, so the expired ones are always at the front and purging
    them costs nothing when there are none.
    """

    name = "memory"

    def __init__(self, ttl: float, max_conversations: int, clock: Callable[[], float] = time.time) -> None:
        self._ttl = ttl
        self._max = max_conversations
        self._clock = clock
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()

    def _purge_expired(self, now: float) -> None:
        conversations = self._conversations
        while conversations:
            oldest = next(iter(conversations.values()))
            if now - oldest.last_used < self._ttl:
                break
            conversations.popitem(last=False)

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

    async def append(self, conversation_id: str, owner: str, turns: Sequence[Turn], max_turns: int) -> None:
        """Add turns, keep the last `max_turns`, move the conversation to the most recently used end."""
        now = self._clock()
        conversation = self._get(conversation_id, owner, now)
        if conversation is None:
            conversation = self._conversations[conversation_id] = _Conversation(owner, list(turns), now)
            while len(self._conversations) > self._max:
                self._conversations.popitem(last=False)
        else:
            conversation.turns.extend(turns)
            conversation.last_used = now
            self._conversations.move_to_end(conversation_id)
        if len(conversation.turns) > max_turns:
            del conversation.turns[:-max_turns]

    async def count(self) -> int:
        """How many conversations are stored."""
        return len(self._conversations)

    async def aclose(self) -> None:
        """Forget everything: nothing outlives the process in this store."""
        self._conversations.clear()
